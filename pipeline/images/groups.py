"""Groups of images that must stay on one side of a split: photos of one scene (a burst, crops or
re-saves of one photo), which cross-validation would otherwise put on both sides of a fold, where
each scores its twin and the folds' scores, and the settings chosen by them, read too high.

A groups file is a CSV with a header, in one of two shapes:

- `path,group`: each image's group (any text); images it does not name are groups of one;
- `path,other`: pairs of images of one group, as the audit's duplicates.csv lists them. Groups are
  the connected components of the pairs (scipy.sparse.csgraph), so a chain a~b, b~c is one group.

Paths as the features cache records them; cells the audit quoted against spreadsheet formulas
('=x.jpg, core.files.csv_safe) are read back as written. A row with a blank group is a group of
one, and a pairs file with no rows (the audit found no pairs) means no groups. A file none of whose
paths the cache holds is the wrong file: a one-line error, as a file without those columns is.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .. import UserError
from ..core.files import csv_unsafe

MAX_BYTES = 256 << 20


def read_groups(path: Path | str) -> dict[str, str]:
    """{image path: group key} from a groups file (either shape); UserError for a bad file."""
    what = f"groups file {str(path)!r}"
    try:
        raw = Path(path).read_bytes() if Path(path).is_file() and Path(path).stat().st_size <= MAX_BYTES else None
    except OSError as e:
        raise UserError(f"{what} is not readable ({e.strerror or e})") from None
    if raw is None:
        raise UserError(f"{what} does not exist, is not a file or is over {MAX_BYTES >> 20} MiB")
    try:
        reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
        rows = [{k.strip(): csv_unsafe((v or "").strip()) for k, v in r.items() if k} for r in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{what} is not a UTF-8 CSV ({e})") from None
    columns = {c.strip() for c in reader.fieldnames or ()}
    if "path" in columns and "group" in columns:
        blank = sum(1 for r in rows if r.get("path") and not r.get("group"))
        if blank:
            print(f"{what}: {blank} row{'s' * (blank > 1)} without a group: each such image is a group of one")
        return {r["path"]: f"g:{r['group']}" for r in rows if r.get("path") and r.get("group")}
    if "path" in columns and "other" in columns:
        if not rows:
            print(f"{what} lists no pairs: no groups (each image is a group of one)")
        return _components([(r["path"], r["other"]) for r in rows if r.get("path") and r.get("other")])
    raise UserError(f"{what} needs a header with columns path,group or path,other (the audit's duplicates.csv); "
                    f"found {sorted(c for c in columns if c) or 'no rows'}")


def _components(pairs: list[tuple[str, str]]) -> dict[str, str]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return {}
    names = sorted({p for pair in pairs for p in pair})
    index = {p: i for i, p in enumerate(names)}
    a = np.array([index[p] for p, _ in pairs], dtype=np.int64)
    b = np.array([index[q] for _, q in pairs], dtype=np.int64)
    _, label = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names),) * 2), directed=False)
    return {p: f"c:{label[i]}" for p, i in index.items()}


def group_ids(paths: list[str], groups: dict[str, str], what: str) -> np.ndarray:
    """An integer group per path (images of one group share it; images the file does not name get one
    each). UserError when the file names none of `paths`: it belongs to other images."""
    if groups and paths and not groups.keys() & set(paths):
        raise UserError(f"{what} names none of these {len(paths)} images (paths as the features cache records them, "
                        f"e.g. {paths[0]!r}; the file has e.g. {next(iter(groups))!r})")
    keys = [groups.get(p, f"i:{p}") for p in paths]
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)
