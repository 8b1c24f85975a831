r"""Label new images with a saved classify head or fine-tuned model. Rows on stdout are
path<TAB>class<TAB>probability (with --reject a fourth field, `known` or `unknown`); a backslash,
tab, newline or carriage return in a path or class name is written
there as \\, \t, \n or \r, so every row is one line of three fields, four with --reject (--csv quotes them as CSV does).

Usage: cnncodes predict --model RUN_DIR IMAGE_OR_DIR_OR_MANIFEST... [--csv FILE]
       torchrun --nproc_per_node=N -m pipeline predict --model RUN_DIR ... --csv FILE

Prints one `path  class  probability` row per image (`margin` instead of `probability` for a
head without probabilities, LinearSVC: the winning class's decision value), then a summary line on
stderr. With --reject each row keeps its class and adds `status`: `unknown` when the image is far
from every training image by the run's rule, else `known`. --precision defaults to fp32, the
exported model's precision, so that predict and the exported predict.py print the same scores.
Exit code 1 when any image could not be labelled; each is named on stderr. A --csv that
cannot be written (its folder missing, or a folder of that name) is refused before any image is
labelled; it is written under a temporary name and renamed into place when complete, and a
path or class starting with =, +, -, @ gets a leading ' there (`core.files.csv_safe`).
"""
from __future__ import annotations

import csv
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import UserError
from ..core import dist
from ..runs import folder as runs
from ..runs.scoring import KNOWN, UNKNOWN, Source, measured_precision, scorer_for
from ..core.cli import Settings, DEVICES, check_loading, opt
from ..core.devices import PRECISION_HELP, PRECISIONS
from ..images.scan import IMG_EXTENSIONS, ImageRecord
from ..images.transforms import Preprocess
from ..core.files import atomic_write, csv_safe, csv_unsafe, write_text


@dataclass(frozen=True)
class Config(Settings):
    images: tuple = opt((), "image files or folders (searched recursively)", positional=True, nargs="+")
    model: Path = opt(Path(""), "a run folder written by classify or finetune (holds model.json)", required=True)
    weights: str = opt("", "weights file for a head trained on file weights, when it is no longer at the recorded path")
    csv: str = opt("", "also write path,class,probability (or margin) rows to this CSV file")
    device: str = opt("auto", "where to run: auto picks cuda when available", DEVICES)
    batch_size: int = opt(32, "images per batch")
    workers: int = opt(-1, "processes decoding images (0 = in process, -1 = one per spare core, at most 8)")
    precision: str = opt("fp32", PRECISION_HELP + "; fp32 by default, as the exported model runs, so that both give "
                                 "the same scores", PRECISIONS)
    reject: bool = opt(False, "add a status column: 'unknown' when an image is far from every training image (the "
                              "rule its run recorded, set on val to turn away about 5%% of known images), else "
                              "'known'; the class is kept")
    trust_pickle: bool = opt(False, "load a head saved as a pickle (model.joblib, older runs): only for files you "
                                    "made yourself, since loading a pickle can run any code")

    def __post_init__(self):
        check_loading(self)


def list_images(args) -> list[Path]:
    """Image files, folders (searched recursively, sorted) and CSV manifests (their path column,
    relative to the manifest's folder), in the order given."""
    out = []
    for a in map(Path, args):
        if a.suffix.lower() == ".csv" and a.is_file():
            with open(a, newline="", encoding="utf-8-sig") as fh:
                rows = csv.DictReader(fh)
                if "path" not in (rows.fieldnames or []):
                    raise UserError(f"manifest {str(a)!r} has no 'path' column")
                names = [csv_unsafe(r["path"]) for r in rows]  # a CSV this stage wrote is a manifest too
                out += [Path(n) if Path(n).is_absolute() else a.parent / n for n in names]
        elif a.is_dir():
            out += sorted(p for p in a.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
        elif a.is_file():
            out.append(a)
        else:
            raise UserError(f"{str(a)!r} does not exist")
    if not out:
        raise UserError("no images found in " + ", ".join(map(str, args)))
    return out


def check_csv(path: str) -> None:
    """Refuse a --csv that cannot be written, before any image is labelled."""
    if not path:
        return
    out = Path(path)
    if out.is_dir():
        raise UserError(f"--csv {path!r} is a folder; give a file name for the rows")
    where = out.parent
    if not where.is_dir():
        raise UserError(f"--csv {path!r}: the folder {str(where)!r} " + ("is a file" if where.exists() else
                                                                      "does not exist"))
    if not os.access(where, os.W_OK | os.X_OK):
        raise UserError(f"--csv {path!r}: the folder {str(where)!r} is not writable")


def check_csv_apart(path: str, model: Path, inputs: list[Path], args=()) -> None:
    """Refuse a --csv inside the model folder (its record would be replaced) or naming one of the
    inputs (an image, or a manifest, replaced by the rows)."""
    if not path:
        return
    out = os.path.realpath(path)
    run = os.path.realpath(model)
    if out == run or out.startswith(run + os.sep):
        raise UserError(f"--csv {path!r} lies inside the model folder {str(model)!r}: its files are the run's "
                        "record; write the rows elsewhere")
    if any(os.path.realpath(p) == out for p in [*inputs, *map(Path, args)]):
        raise UserError(f"--csv {path!r} is one of the inputs: it would be replaced by the rows; write them elsewhere")


_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def tsv_field(text: str) -> str:
    r"""A path or class for a stdout row: backslash, tab, newline and carriage return as \\, \t,
    \n and \r, so a name can neither add a column nor start a row."""
    return re.sub(r"[\\\t\n\r]", lambda m: _TSV_ESCAPES[m.group()], text)


def stream(cfg: Config, ranks: dist.Ranks = dist.Ranks()):
    """(what the scores are, an iterator of (index, path, class or None, score or why, status) for
    this rank's images in input order; status is "" without --reject, else "known" or "unknown").
    Images are decoded in --workers processes, a batch at a time:
    memory stays bounded however many images there are."""
    import torch

    from ..core.devices import precision_for, resolve_device, trim_heap
    from ..images.datasets import eval_images

    spec = runs.read_model(cfg.model)
    paths = list_images(cfg.images)
    check_csv_apart(cfg.csv, cfg.model, paths, cfg.images)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
    ds = eval_images(Path(""), [ImageRecord(str(p), -1, 0, 0) for p in paths], Preprocess.from_spec(spec),
                     spec.get("fast_decode", True))
    mine = [list(range(i, min(i + cfg.batch_size, len(ds)))) for k, i in enumerate(range(0, len(ds), cfg.batch_size))
            if ranks.mine(k)]

    def batches_of(order):
        return torch.utils.data.DataLoader(ds, batch_sampler=order, num_workers=dist.workers_per_rank(cfg.workers,
                                                                                                         ranks))
    def resolved(src: Source) -> Source:
        first = lambda n: iter(batches_of([mine[i % len(mine)] for i in range(n)]))  # noqa: E731
        return measured_precision(src, spec, device, first, cfg.batch_size,
                                  bool(mine) and len(mine[0]) == cfg.batch_size)
    asked = Source(Path(cfg.model), cfg.weights, cfg.trust_pickle, cfg.reject, cfg.precision)
    # --precision auto: rank 0 measures (ranks timing at once would slow each other and could decide
    # apart); the others then read its decision from the precision file, as features' ranks do
    src = resolved(asked) if ranks.main else None
    dist.barrier(ranks)
    src = src or resolved(asked)
    scorer, kind, columns = scorer_for(src, spec, device)
    if ranks.main:
        print(f"predict on {device} ({precision_for(device.type, src.precision)}, --precision {cfg.precision})",
              file=sys.stderr)
    limit = float(spec["reject"]["threshold"]) if cfg.reject else np.inf  # checked by the scorer (check_rule)
    loader = batches_of(mine)

    def rows():
        for b, (idx, (x, why)) in enumerate(zip(mine, loader)):
            if b % 16 == 15:
                trim_heap()  # bounded memory over any number of images (config.trim_heap)
            good = [k for k, w in enumerate(why) if not w]
            s, far = scorer(x[good]) if good else (None, None)
            scores = dict(zip(good, s)) if good else {}
            unknown = dict(zip(good, far > limit)) if far is not None else {}
            for k, i in enumerate(idx):
                if why[k]:
                    yield i, str(paths[i]), None, why[k], ""
                else:
                    status = (UNKNOWN if unknown.get(k) else KNOWN) if cfg.reject else ""
                    yield i, str(paths[i]), columns[int(scores[k].argmax())], float(scores[k].max()), status
    return kind, rows()


def predict(cfg: Config) -> tuple[list[tuple], list[tuple[str, str]], str]:
    """(rows of path, class, score (and status with --reject); files that could not be labelled
    with why; the score's name), for a run in one process; `run` streams instead."""
    check_csv(cfg.csv)
    kind, it = stream(cfg)
    rows, bad = [], []
    for _, path, cls, v, status in it:
        (bad.append((path, v)) if cls is None else rows.append((path, cls, v) + ((status,) if status else ())))
    if cfg.csv:
        write_text(cfg.csv, _csv_text(header(kind, cfg.reject), rows))
    return rows, bad, kind


def header(kind: str, reject: bool) -> list[str]:
    return ["path", "class", kind] + ["status"] * reject


def _csv_text(head: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows([csv_safe(path), csv_safe(cls), *rest] for path, cls, *rest in rows)
    return buf.getvalue()


def _merged(parts: list[Path]):
    """The rows of every rank's part file, back in input order (each part is in order already)."""
    import heapq

    def read(f):
        with open(f, newline="", encoding="utf-8") as fh:
            for i, path, cls, v, status in csv.reader(fh):
                yield int(i), path, cls or None, v, status
    return heapq.merge(*(read(f) for f in parts), key=lambda r: r[0])


def run(cfg: Config) -> int:
    """Label the images: rows go to stdout (and --csv) as they are made, in input order. Under
    torchrun each rank labels every world-th batch into a part file beside --csv, and rank 0
    merges the parts in input order."""
    from ..core.devices import device_type

    ranks = dist.from_env()
    if ranks.world > 1 and not cfg.csv:
        raise UserError("under torchrun, give --csv FILE (on a filesystem all ranks share): each rank writes its "
                        "part beside it and rank 0 merges them in input order")
    check_csv(cfg.csv)
    dist.init(ranks, device_type(cfg.device))
    try:
        kind, rows = stream(cfg, ranks)
        if ranks.world > 1:
            part = Path(f"{cfg.csv}.rank{ranks.rank}")
            with open(part, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                for i, path, cls, v, status in rows:
                    w.writerow([i, path, cls or "", v, status])
            dist.barrier(ranks)
            if not ranks.main:
                return 0
            parts = [Path(f"{cfg.csv}.rank{r}") for r in range(ranks.world)]
            rows = _merged(parts)
        n_bad = write_rows(cfg, kind, rows)
        if ranks.world > 1:
            for f in parts:
                f.unlink(missing_ok=True)
        return 1 if n_bad else 0
    finally:
        dist.close(ranks)


def write_rows(cfg: Config, kind: str, rows) -> int:
    """Print rows as they come (and write them to --csv through `atomic_write`: renamed into place
    once complete, no temporary file left if labelling fails); the bad files go to stderr. Returns
    how many could not be labelled."""
    good = bad = far = 0

    def emit(w) -> None:
        nonlocal good, bad, far
        head = header(kind, cfg.reject)
        if w:
            w.writerow(head)
        print("\t".join(head))
        for _, path, cls, v, status in rows:
            if cls is None:
                print(f"{tsv_field(path)}: not labelled: {v}", file=sys.stderr)
                bad += 1
                continue
            v = float(v)
            print(f"{tsv_field(path)}\t{tsv_field(cls)}\t{v:.4f}" + (f"\t{status}" if status else ""))
            if w:
                w.writerow([csv_safe(path), csv_safe(cls), v] + ([status] if status else []))
            good += 1
            far += status == UNKNOWN

    def write(fh) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        try:
            emit(csv.writer(text, lineterminator="\n"))
        finally:
            text.flush()
            text.detach()  # atomic_write fsyncs and closes the file itself

    if cfg.csv:
        atomic_write(cfg.csv, write)
    else:
        emit(None)
    print(f"labelled {good} of {good + bad} images with {cfg.model}" + (f"; {bad} could not be read" if bad else "")
          + (f"; {far} far from every training image (status unknown)" if cfg.reject else "")
          + (f"; rows in {cfg.csv}" if cfg.csv else ""), file=sys.stderr)
    return bad
