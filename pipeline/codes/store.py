"""The HDF5 store of CNN codes: schema, crash-safe writes with resume, validated reads.

Layout of features/<dataset>/<backbone>-<weights>.h5, written only by `write_codes`:
  root attributes: format, complete, splits (JSON list), and every field of `Header`:
    fingerprint (sha256 of inputs), inputs (JSON of everything that determines the codes),
    classes (JSON), dataset, data_root, backbone, weights (id), weights_arg, weights_sha256
    ("" unless a file), transform (JSON), image_size, dim, precision, bn_folded, device, seed,
    extract_seconds, compile_seconds, images_per_second, versions (JSON), created, command (the command line),
    views (JSON: per split, how its extra views were made, how many, their fingerprint and cost)
    cost (JSON: what the trunk costs per image to use, timed by core.timing's harness; not in the fingerprint)
  /<split>/codes  N x D float32      /<split>/labels N int64      /<split>/paths N str
      (codes and labels chunked with fletcher32 checksums, verified by HDF5 on every read)
  /<split>/skipped_paths, skipped_reasons (files left out and why)
  /<split>/files/{path,size,mtime_ns}  the scanned image list, to explain what changed
  /<split>/views  N x V x D float32, optional: V extra views of each image (views.py), chunked by
      image with checksums; added by rewriting a copy of the file and renaming it into place

Crash safety (hand-written because HDF5 itself is not crash-safe: a killed writer can leave a file
that does not open): work is saved as small shard files (shards.py), each written to a temporary
name and renamed into place, in `<out>.parts/`; a resumed run keeps the shards whose fingerprint matches and
computes the rest with the same batch boundaries, so the result equals an uninterrupted run. The
HDF5 file is assembled under a temporary name, flushed, fsync'ed and renamed over `<out>` in one
step (core.files.replacing): a reader sees either no file, the old complete file, or the new complete file.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import h5py
import numpy as np

from .. import UserError
from ..core.files import replacing

T = TypeVar("T")

FORMAT = "cnncodes-features/1"
_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class Header:
    """The root attributes that describe a features file (see the module docstring)."""

    classes: list[str]
    dataset: str
    backbone: str
    fingerprint: str = ""
    inputs: dict = field(default_factory=dict)
    data_root: str = ""
    weights: str = ""
    weights_arg: str = ""
    weights_sha256: str | None = None
    transform: dict = field(default_factory=dict)
    image_size: int = 0
    dim: int = 0
    precision: str = ""
    bn_folded: bool = False
    device: str = ""
    seed: int = 0
    extract_seconds: float | None = None
    compile_seconds: float = 0.0  # torch.compile's time (features --compile), not in extract_seconds
    images_per_second: float | None = None
    versions: dict = field(default_factory=dict)
    created: str = ""
    command: str = ""  # what made the file (core.cli.command_line): not part of the fingerprint
    views: dict = field(default_factory=dict)  # split -> its extra views: views.spec + n, fingerprint, seconds
    cost: dict = field(default_factory=dict)  # the trunk's cost per image to use (core.timing), not in the fingerprint

    @classmethod
    def from_attrs(cls, attrs: dict) -> Header:
        known = {f.name for f in fields(cls)}
        vals = {k: v for k, v in attrs.items() if k in known}
        vals["weights_sha256"] = vals.get("weights_sha256") or None  # stored as "" (HDF5 has no None)
        return cls(**vals)


@dataclass
class SplitPiece:
    """One split of a file being written: its rows arrive as `chunks` of (codes, labels, paths) in
    output order, so memory stays flat whatever the dataset size."""

    n: int  # rows of codes
    dim: int
    files: list  # the scanned image records (path, size, mtime_ns), usable or not
    skipped: list[tuple[str, str]]  # (relative path, reason)
    chunks: Iterator[tuple[np.ndarray, np.ndarray, list[str]]]


@dataclass
class SplitCodes:
    codes: np.ndarray  # N x D float32
    labels: np.ndarray  # N int64
    paths: list[str]
    skipped: list[tuple[str, str]]
    views: np.ndarray | None = None  # N x V x D float32: extra views of each image, when the file has them


@dataclass
class Codes:
    path: Path
    header: Header
    splits: dict[str, SplitCodes]

    @property
    def classes(self) -> list[str]:
        return list(self.header.classes)


def without_paths(codes: Codes, excluded: set[str], why: str) -> Codes:
    """The codes less the rows of the `excluded` image paths (moved to each split's skipped list)."""
    from dataclasses import replace

    splits = {}
    for name, s in codes.splits.items():
        keep = np.array([p not in excluded for p in s.paths], dtype=bool)
        splits[name] = replace(s, codes=s.codes[keep], labels=s.labels[keep],
                               paths=[p for p, k in zip(s.paths, keep) if k],
                               skipped=sorted(s.skipped + [(p, why) for p, k in zip(s.paths, keep) if not k]),
                               views=None if s.views is None else s.views[keep])
    return replace(codes, splits=splits)


def _decode_attr(v):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v.item() if isinstance(v, np.generic) else v


def read_attrs(path: Path | str) -> dict:
    """Root attributes of a complete cache; UserError for a missing, unreadable or partial file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"features file {str(path)!r} does not exist (run `make features` first)")
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
    except OSError as e:
        raise UserError(f"{str(path)!r} is not a readable HDF5 features file ({e})") from None
    if attrs.get("format") != FORMAT:
        raise UserError(
            f"{str(path)!r} is not a cnncodes features file of format {FORMAT} (found {attrs.get('format')!r}); "
            "re-run `features`"
        )
    if not attrs.get("complete"):
        raise UserError(f"{str(path)!r} is incomplete (its writer did not finish); re-run `features` to resume")
    return attrs


def read_codes(path: Path | str) -> Codes:
    """The whole file, checked: every split has codes, labels and paths of one length, the codes'
    width is the recorded dim, and HDF5 verifies the codes' and labels' checksums as it reads.
    Anything else is a UserError naming the file, never a half-read cache."""
    attrs = read_attrs(path)
    header, splits = Header.from_attrs(attrs), {}
    try:
        with h5py.File(path, "r") as f:
            for name in attrs["splits"]:
                splits[name] = _read_split(f[name], header.dim)
    except (KeyError, OSError, ValueError, TypeError) as e:  # a dataset missing, a checksum that fails
        raise UserError(f"{str(path)!r} is damaged ({type(e).__name__}: {e}); re-run `features --force`") from None
    return Codes(Path(path), header, splits)


def read_split(path: Path | str, name: str, labels_only: bool = False) -> SplitCodes:
    """One split of a complete file, checked like `read_codes`; `labels_only` leaves its codes
    (and views) on disk: for heads that stream the codes in chunks."""
    def read(g: h5py.Group, attrs: dict) -> SplitCodes:
        if labels_only:
            return SplitCodes(np.empty((0, g["codes"].shape[1]), np.float32), g["labels"][...].astype(np.int64),
                              [], list(zip(g["skipped_paths"].asstr()[...], g["skipped_reasons"].asstr()[...])))
        return _read_split(g, Header.from_attrs(attrs).dim)
    return _from_split(path, name, read)


def read_paths(path: Path | str, name: str) -> list[str]:
    """The image paths of one split of a complete file, its codes left on disk (a sweep compares
    which images each backbone coded: a million 2,048-d codes are 8 GB, their paths a few MB)."""
    return _from_split(path, name, lambda g, attrs: list(g["paths"].asstr()[...]))


def _from_split(path: Path | str, name: str, read: Callable[[h5py.Group, dict], T]) -> T:
    """`read(the split's group, the file's attributes)` on a complete file that holds split `name`;
    a one-line UserError for a missing split or a damaged file."""
    attrs = read_attrs(path)
    if name not in attrs["splits"]:
        raise UserError(f"{str(path)!r} has no split {name!r} (it has {attrs['splits']})")
    try:
        with h5py.File(path, "r") as f:
            return read(f[name], attrs)
    except (KeyError, OSError, ValueError, TypeError) as e:
        raise UserError(f"{str(path)!r} is damaged ({type(e).__name__}: {e}); re-run `features --force`") from None


def _read_split(g: h5py.Group, dim: int) -> SplitCodes:
    s = SplitCodes(codes=g["codes"][...], labels=g["labels"][...].astype(np.int64),
                   paths=[p.decode() if isinstance(p, bytes) else p for p in g["paths"][...]],
                   skipped=list(zip(g["skipped_paths"].asstr()[...], g["skipped_reasons"].asstr()[...])))
    n = len(s.codes)
    if "views" in g:
        s.views = g["views"][...]
        if s.views.shape[0] != n or s.views.shape[2:] != s.codes.shape[1:] or not np.isfinite(s.views).all():
            raise ValueError(f"split {g.name.strip('/')!r}: views {s.views.shape} do not match codes {s.codes.shape}")
    if s.codes.ndim != 2 or (dim and s.codes.shape[1] != dim) or len(s.labels) != n or len(s.paths) != n:
        raise ValueError(f"split {g.name.strip('/')!r}: {s.codes.shape} codes, {len(s.labels)} labels, "
                         f"{len(s.paths)} paths (dim {dim})")
    if not np.isfinite(s.codes).all():
        raise ValueError(f"split {g.name.strip('/')!r} holds codes that are not finite numbers")
    return s


def recorded_files(path: Path | str) -> dict[str, dict[str, tuple[int, int]]]:
    """{split: {relative path: (size, mtime_ns)}} of the image list the cache was made from."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in _decode_attr(f.attrs["splits"]):
            g = f[name]["files"]
            out[name] = dict(zip(g["path"].asstr()[...], zip(g["size"][...].tolist(), g["mtime_ns"][...].tolist())))
    return out


def row_counts(path: Path | str) -> dict[str, tuple[int, int]]:
    """{split: (codes, skipped files)} of a complete file, read from the dataset shapes."""
    with h5py.File(path, "r") as f:
        return {name: (f[name]["codes"].shape[0], f[name]["skipped_paths"].shape[0])
                for name in _decode_attr(f.attrs["splits"])}


def describe_counts(counts: dict[str, tuple[int, int]]) -> str:
    """'train 244 codes (1 file skipped), val 153 codes': what every message about a file says."""
    return ", ".join(f"{name} {n} codes" + (f" ({k} file{'s' * (k != 1)} skipped)" if k else "")
                     for name, (n, k) in counts.items())


def _attr(v):
    return json.dumps(v) if isinstance(v, (dict, list, tuple)) else ("" if v is None else v)


def write_codes(out: Path, header: Header, splits: dict[str, SplitPiece]) -> None:
    """Assemble the final file from per-split pieces and rename it into place atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f"{out.name}.tmp*"):
        stale.unlink()  # left by a writer killed mid-assembly; its shards are still there
    with replacing(out) as tmp, h5py.File(tmp, "w") as f:
        for k, v in asdict(header).items():
            f.attrs[k] = _attr(v)
        f.attrs["format"] = FORMAT
        f.attrs["splits"] = json.dumps(list(splits))
        f.attrs["complete"] = False
        for name, piece in splits.items():
            _write_split(f.create_group(name), name, piece)
        f.attrs["complete"] = True  # last: a file without it is never accepted


def write_views(out: Path, views: dict[str, np.ndarray], records: dict[str, dict]) -> None:
    """Replace the extra views of the given splits (N x V x D each) and their records in the root
    `views` attribute. A copy of the file is changed and renamed over it, so a reader sees the old
    complete file or the new one, as with `write_codes`."""
    with replacing(Path(out), copy=True) as tmp, h5py.File(tmp, "r+") as f:
        f.attrs["complete"] = False
        recorded = _decode_attr(f.attrs.get("views", "{}")) or {}
        for name, v in views.items():
            g = f[name]
            if "views" in g:
                del g["views"]
            n, k, d = v.shape
            g.create_dataset("views", data=v.astype(np.float32), chunks=(1, k, d) if n and k else None,
                             fletcher32=bool(n and k))
            recorded[name] = records[name]
        f.attrs["views"] = json.dumps(recorded)
        f.attrs["complete"] = True


def _write_split(g: h5py.Group, name: str, s: SplitPiece) -> None:
    n = s.n
    # chunked with fletcher32 checksums, which HDF5 verifies on every read: a flipped bit in the
    # codes is an error, not a silently different number
    codes = g.create_dataset("codes", (n, s.dim), "f4", chunks=(min(max(n, 1), 1024), s.dim) if n else None,
                             fletcher32=bool(n))
    labels = g.create_dataset("labels", (n,), "i8", chunks=(min(max(n, 1), 65536),) if n else None,
                              fletcher32=bool(n))
    paths = g.create_dataset("paths", (n,), _STR)
    i = 0
    for c, lab, p in s.chunks:
        codes[i:i + len(c)] = c
        labels[i:i + len(c)] = lab
        paths[i:i + len(c)] = p
        i += len(c)
    assert i == n, f"{name}: wrote {i} of {n} rows"
    g.create_dataset("skipped_paths", data=[p for p, _ in s.skipped], dtype=_STR)
    g.create_dataset("skipped_reasons", data=[r for _, r in s.skipped], dtype=_STR)
    fg = g.create_group("files")
    fg.create_dataset("path", data=[r.path for r in s.files], dtype=_STR)
    fg.create_dataset("size", data=np.array([r.size for r in s.files], dtype=np.int64))
    fg.create_dataset("mtime_ns", data=np.array([r.mtime_ns for r in s.files], dtype=np.int64))
