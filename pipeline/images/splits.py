"""Which splits a data folder has, and an automatic split for a folder that has none.

`--splits auto` (the default) takes DATA/train and DATA/val, and DATA/test beside them when it is
there. A plain DATA/<class>/<image> folder, the common shape of a user's photos, and a CSV manifest
without a split column (scan.split_automatically splits both) are split once into train, val and
test: stratified (each class cut in the same proportions, default 70/15/15), each image placed by a
hash of (seed, its relative path), so the split is the same on every run and for every stage, and
adding images leaves the others where they were. The rule is recorded in the
scan (and so in the features file's fingerprint and every run's inputs).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .. import UserError

AUTO = "auto"
FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test
SEED = 0


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15): three positive shares of train, val and test summing to 1."""
    try:
        f = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        f = ()
    if len(f) != 3 or min(f) <= 0 or abs(sum(f) - 1) > 1e-6:
        raise UserError(f"--split takes three positive shares of train, val and test that sum to 1, e.g. "
                        f"0.7,0.15,0.15 (got {text!r})")
    return f  # type: ignore[return-value]


def folder_layout(root: Path, wanted: tuple[str, ...]) -> tuple[str, ...] | None:
    """The splits to scan: `wanted` as given, or for `auto` train and val (and test when present);
    None when the folder has no split folders but class folders: to be split automatically."""
    if wanted != (AUTO,):
        return wanted
    if (root / "train").is_dir() and (root / "val").is_dir():
        return ("train", "val", "test") if (root / "test").is_dir() else ("train", "val")
    if (root / "train").is_dir() or (root / "val").is_dir():
        raise UserError(f"{str(root)!r} has {'train' if (root / 'train').is_dir() else 'val'}/ but not the other: "
                        "give both split folders, or none (a folder of class folders is split automatically)")
    return None


def assign(paths: list[str], fractions: tuple[float, float, float] = FRACTIONS, seed: int = SEED) -> list[str]:
    """The split of each path of ONE class: ordered by a hash of (seed, path), the first share to
    val, the next to test, the rest to train; a class of three or more images has one of each."""
    order = sorted(range(len(paths)), key=lambda i: hashlib.sha256(f"{seed}\0{paths[i]}".encode()).hexdigest())
    n = len(paths)
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    out = ["train"] * n
    for rank, i in enumerate(order):
        out[i] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def rule_of(fractions: tuple[float, float, float], seed: int = SEED) -> str:
    """The recorded rule, machine-readable: 'auto 0.7,0.15,0.15 seed 0'."""
    return f"auto {','.join(f'{f:g}' for f in fractions)} seed {seed}"


def fractions_of(rule: str) -> tuple[float, float, float]:
    """Back from a recorded rule (rule_of) to its fractions."""
    return parse_fractions(rule.split()[1])


def describe(rule: str) -> str:
    """The rule in words, for people."""
    f = fractions_of(rule)
    return (f"split automatically: {' / '.join(f'{100 * x:g}%' for x in f)} train / val / test, stratified by "
            f"class, each image placed by a hash of ({rule.split()[-2]} {rule.split()[-1]}, its path)")
