"""Resumable pieces of an extraction: one .npz per (split, shard index) in `<out>.parts/` (views:
`<out>.views.parts/`), each written to a temporary name and renamed into place, stamped with the
extraction's fingerprint and a checksum of its content and position. A shard that does not check
out (unreadable, foreign, the wrong shape, non-finite codes, a skip reason no decoder gives) is
discarded with a message and computed again: damage never blocks a rerun, and never reaches the
assembled file. See store.py for the file the shards are assembled into.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .. import UserError
from ..core.files import atomic_write


# a skip reason a shard may hold besides "" (images/decode.py: BadImage): one line, no control characters
_REASON = re.compile(r"undecodable: [^\x00-\x1f\x7f]{1,2000}")


def npz_header(npz, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one array of an open .npz, read from its .npy header alone: nothing is
    allocated. ValueError when the header claims more data than the archive member can hold (a
    crafted 2**40-row header would otherwise be allocated before a byte of it is read)."""
    info = npz.zip.getinfo(f"{key}.npy")
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else 1100  # deflate expands 1032:1 at most
    if info.file_size > max(info.compress_size, 1) * ratio:
        raise ValueError(f"{key}: its archive entry claims {info.file_size} bytes from {info.compress_size}")
    with npz.zip.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{key}: .npy format version {version} is not read here")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        room = info.file_size - fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{key} holds Python objects (a pickle), which are never loaded")
    if math.prod(shape) * dtype.itemsize > room:
        raise ValueError(f"{key}: its header claims {shape} {dtype}, more than the {room} bytes stored")
    return shape, dtype


class Shards:
    """Finished pieces of an extraction, one .npz per (split, shard index), in `<out>.parts/`. Each
    holds a checksum of its content, this extraction's fingerprint and its place: a shard that is
    damaged, or was not written there by this extraction, is discarded (with a message) and computed
    again, never assembled. `force` starts from an empty folder."""

    def __init__(self, out: Path, fingerprint: str, suffix: str = ".parts", force: bool = False):
        self.dir, self.stamp = Path(str(out) + suffix), fingerprint
        self.check_place(out, suffix)
        stamp = self.dir / "fingerprint"
        if force and self.dir.exists():
            print(f"--force: removing the unfinished shards in {self.dir}")
        if self.dir.exists() and (force or not stamp.is_file() or stamp.read_bytes() != fingerprint.encode()):
            shutil.rmtree(self.dir)  # shards of other inputs must never be mixed in
        self.dir.mkdir(parents=True, exist_ok=True)
        if not stamp.is_file():
            atomic_write(stamp, lambda fh: fh.write(fingerprint.encode()))

    @staticmethod
    def check_place(out: Path, suffix: str = ".parts") -> None:
        """UserError when `<out><suffix>` is a file or a link: only a folder of shards is ever made
        there, so it is something this project did not make (deleting it could lose what it holds,
        and shards written through a link would land outside --out)."""
        d = Path(str(out) + suffix)
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise UserError(f"{str(d)!r} is a {'link' if d.is_symlink() else 'file'}, where features keeps its "
                            "folder of unfinished shards; move it away or delete it")

    def _file(self, split: str, index: int) -> Path:
        return self.dir / f"{split}-{index:06d}.npz"

    def done(self, split: str, index: int) -> bool:
        return self._file(split, index).is_file()

    def _digest(self, split: str, index: int, codes: np.ndarray, reasons: list[str], seconds: float) -> str:
        h = hashlib.sha256(json.dumps([self.stamp, split, index, codes.shape, reasons, float(seconds)]).encode())
        h.update(np.ascontiguousarray(codes, dtype="<f4").tobytes())
        return h.hexdigest()

    def save(self, split: str, index: int, codes: np.ndarray, reasons: list[str], seconds: float = 0.0) -> None:
        codes, reasons = codes.astype(np.float32), [str(r) for r in reasons]
        check = self._digest(split, index, codes, reasons, seconds)
        atomic_write(self._file(split, index), lambda fh: np.savez(
            fh, codes=codes, reasons=np.array(reasons, dtype=str), seconds=np.float64(seconds), check=np.array(check)))

    def valid(self, split: str, index: int, shape: tuple[int, ...]) -> bool:
        """Whether the shard is on disk and holds what this extraction writes there: codes of `shape`
        (rows x dim, or rows x views x dim), finite, "" or a decoder's reason for each row (only ""
        for views), and its checksum. One that does not is deleted, with a message, to be computed again."""
        f = self._file(split, index)
        if not os.path.lexists(f):
            return False
        try:
            why = self._problem(f, split, index, tuple(shape))
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:
            why = f"unreadable: {type(e).__name__}: {str(e)[:200]}"
        if why:
            print(f"discarded the shard {f.name} in {self.dir} ({why}); it is computed again", flush=True)
            shutil.rmtree(f) if f.is_dir() and not f.is_symlink() else f.unlink()
        return not why

    def _problem(self, f: Path, split: str, index: int, shape: tuple[int, ...]) -> str:
        with np.load(f, allow_pickle=False) as z:
            if sorted(z.files) != ["check", "codes", "reasons", "seconds"]:
                return f"members {sorted(z.files)}, not codes, reasons, seconds and check"
            got = {k: npz_header(z, k) for k in z.files}
            if got["codes"] != (shape, np.float32) or got["reasons"][0] != shape[:1] or got["seconds"][0] != ():
                return f"codes {got['codes'][0]} {got['codes'][1]}, expected {shape} float32"
            codes, reasons, seconds = z["codes"], [str(r) for r in z["reasons"]], float(z["seconds"])
            check = str(z["check"])
        if not np.isfinite(codes).all():
            return "codes that are not finite numbers"
        wrong = [r for r in reasons if r and (len(shape) == 3 or not _REASON.fullmatch(r))]
        if wrong or not (np.isfinite(seconds) and seconds >= 0):
            return f"a skip reason no decoder gives: {wrong[0][:80]!r}" if wrong else f"{seconds} seconds"
        if check != self._digest(split, index, codes, reasons, seconds):
            return "its checksum does not match: not written here by this extraction"
        return ""

    def load(self, split: str, index: int) -> tuple[np.ndarray, list[str]]:
        with np.load(self._file(split, index)) as z:
            return z["codes"], [str(r) for r in z["reasons"]]

    def reasons(self, split: str, index: int) -> list[str]:
        with np.load(self._file(split, index)) as z:  # npz members load lazily: codes stay on disk
            return [str(r) for r in z["reasons"]]

    def seconds(self, split: str, index: int) -> float:
        with np.load(self._file(split, index)) as z:
            return float(z["seconds"])

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def remove_leftovers(out: Path) -> None:
        shutil.rmtree(Path(str(out) + ".parts"), ignore_errors=True)
