"""Small file helpers every module shares: atomic writes, JSON in and out, file digests.

Not named `io`: it would read like the standard library's.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import BinaryIO, Callable

from .. import UserError


@contextlib.contextmanager
def replacing(path: Path | str, copy: bool = False):
    """The one way a file is replaced: yield a temporary name beside `path` (a copy of it with
    `copy`) for the new file to be written at; when the block ends without error the file is
    fsync'ed and renamed over `path` in one step, else removed (Ctrl-C included): a reader sees
    the old complete file or the new one, never half of one, and no temporary file is left. For
    writers that need a name (HDF5); `atomic_write` serves the ones that take a file handle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")  # per process: two writers never share one
    try:
        if copy:
            shutil.copyfile(path, tmp)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through `write(fh)` and swap it into place (`replacing`). Every output of the
    project (shards, JSON records, checkpoints, models, reports, features files) goes through
    `replacing`."""
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return Path(path)


_FORMULA = re.compile(r"'*[=+\-@\t\r]")  # what a spreadsheet reads as a formula, behind any quotes


def csv_safe(cell: str) -> str:
    """A name or path for a CSV cell that a spreadsheet will not run as a formula (OWASP's CSV
    injection advice): a cell starting with =, +, -, @, tab or carriage return gets a leading '.
    Reversible by `csv_unsafe`: a cell that already starts with quotes before one of those gets one
    more. For string cells only: numbers (a negative margin) are written as numbers."""
    return "'" + cell if _FORMULA.match(cell) else cell


def csv_unsafe(cell: str) -> str:
    """The name or path `csv_safe` was given."""
    return cell[1:] if cell.startswith("'") and _FORMULA.match(cell, 1) else cell


@contextlib.contextmanager
def exclusive(path: Path | str, what: str, lock_file: Path | str | None = None):
    """Hold `<path>.lock` (or `lock_file`) while writing `path`: a second writer is refused at once
    with a clear message, instead of two runs interleaving their pieces. The lock dies with its
    process."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_file or f"{path}.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"another {what} is writing {str(path)!r} right now; wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()


def write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def check_out_folder(path: Path | str, flag: str = "--out") -> None:
    """UserError unless `path` is a folder or can become one: not a file, not a link to nothing
    (mkdir would fail on it with a traceback)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UserError(f"{flag} {str(path)!r} is a link to {os.readlink(path)!r}, which does not exist: create its "
                        "target or give another folder")
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {str(path)!r} is a file, not a folder")


def write_json(path: Path | str, doc) -> Path:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    return write_text(path, json.dumps(doc, indent=1, default=_jsonable))


def read_json(path: Path | str, what: str = "JSON file"):
    """Parse a JSON file; a missing or broken one is a UserError naming `what` and the path."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{what} {str(path)!r} is not readable JSON ({e})") from None


def json_digest(obj) -> str:
    """sha256 of a JSON-able value with sorted keys: the fingerprint of a stage's inputs."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_jsonable).encode()).hexdigest()


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def plain_name(name: str) -> str:
    """`name` as one plain file or folder name: control characters and path separators become _
    (a dataset called 'a/b' must not make a folder inside another)."""
    return re.sub(r"[\x00-\x1f\x7f/\\]", "_", str(name or ""))
