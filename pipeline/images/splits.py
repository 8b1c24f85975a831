"""Which splits a data folder has, and an automatic split for a folder that has none.

`--splits auto` (the default) takes the split folders shapes.py finds (train, val and test, by name
or alias). A train/ and test/ without val/ has val carved from train (carve: each class's share
placed by the same hash). A plain DATA/<class>/<image> folder, the common shape of a user's photos,
and a CSV manifest without a split column (scan.split_automatically splits both) are split once into train, val and
test: stratified (each class cut in the same proportions, default 70/15/15), each image placed by a
hash of (seed, its relative path), so the split is the same on every run and for every stage, and
adding images leaves the others where they were. The rule is recorded in the
scan (and so in the features file's fingerprint and every run's inputs).
"""
from __future__ import annotations

import hashlib
import math

from .. import UserError

FRACTIONS = (0.7, 0.15, 0.15)  # train, val, test
SEED = 0


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15): three positive shares of train, val and test summing to 1."""
    try:
        f = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        f = ()
    if len(f) != 3 or not all(map(math.isfinite, f)) or min(f) <= 0 or abs(sum(f) - 1) > 1e-6:
        raise UserError(f"--split takes three positive shares of train, val and test that sum to 1, e.g. "
                        f"0.7,0.15,0.15 (got {text!r})")
    return f  # type: ignore[return-value]


def _order(paths: list[str], seed: int) -> list[int]:
    """The indices of `paths` ordered by a hash of (seed, path): assign and carve place images by it."""
    return sorted(range(len(paths)), key=lambda i: hashlib.sha256(f"{seed}\0{paths[i]}".encode()).hexdigest())


def assign(paths: list[str], fractions: tuple[float, float, float] = FRACTIONS, seed: int = SEED) -> list[str]:
    """The split of each path of ONE class: ordered by a hash of (seed, path), the first share to
    val, the next to test, the rest to train; a class of three or more images has one of each."""
    order, n = _order(paths, seed), len(paths)
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    out = ["train"] * n
    for rank, i in enumerate(order):
        out[i] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def carve(paths: list[str], share: float, seed: int = SEED) -> list[bool]:
    """Which paths of ONE class's train images go to val: the first `share` of them by the hash of
    assign (one at least, and one left in train); a class of fewer than two images gives none."""
    n = len(paths)
    if n < 2:
        return [False] * n
    order = _order(paths, seed)
    chosen = set(order[:min(max(round(n * share), 1), n - 1)])
    return [i in chosen for i in range(n)]


CARVE = "val-from-train"  # the rule's first word when val was carved from a train/ folder beside test/


def rule_of(fractions: tuple[float, float, float], seed: int = SEED, kind: str = "auto") -> str:
    """The recorded rule, machine-readable: 'auto 0.7,0.15,0.15 seed 0' (or 'val-from-train ...')."""
    return f"{kind} {','.join(f'{f:g}' for f in fractions)} seed {seed}"


def fractions_of(rule: str) -> tuple[float, float, float]:
    """Back from a recorded rule (rule_of) to its fractions."""
    return parse_fractions(rule.split()[1])


def describe(rule: str) -> str:
    """The rule in words, for people."""
    f = fractions_of(rule)
    if rule.startswith(CARVE):
        return (f"no val folder: val carved from train: {100 * f[1]:g}% of each class's train images (--split's val "
                f"share), placed by a hash of ({rule.split()[-2]} {rule.split()[-1]}, its path); test kept as test")
    return (f"split automatically: {' / '.join(f'{100 * x:g}%' for x in f)} train / val / test, stratified by "
            f"class, each image placed by a hash of ({rule.split()[-2]} {rule.split()[-1]}, its path)")
