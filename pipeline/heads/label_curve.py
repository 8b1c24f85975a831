"""How many labels does a head need? Val accuracy against the number of training images per class.

For each size (e.g. 1, 2, 5, 10, 20, 50 images per class) several subsets of train are drawn at
random (stratified, without replacement, reproducible from the seed, size and draw), the head's
setting is chosen by CV on the drawn subset only (the full train set and val are never seen), the
head is refit on the subset and scored on val. With one image per class no fold can hold every
class, so CV is impossible: the middle of the head's path is used, and the record says so.
Cheap because the codes are cached: no image is decoded and no backbone runs.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np

DEFAULT_SIZES = (1, 2, 5, 10, 20, 50)
# fit(X, y, seed) -> (fitted model, chosen value, how it was chosen)
Fit = Callable[[np.ndarray, np.ndarray, int], tuple[object, object, str]]


def draw(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `per_class` images of every class (all of a class that has fewer), sorted."""
    picked = [rng.choice(idx, min(per_class, len(idx)), replace=False)
              for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
    return np.sort(np.concatenate(picked))


def sizes_to_run(y: np.ndarray, sizes: tuple[int, ...]) -> list[int]:
    """The sizes that are a real subset: a size at or above the largest class is the full train set."""
    largest = int(np.bincount(y).max())
    return [s for s in sorted(set(sizes)) if 1 <= s < largest]


def estimate_seconds(y: np.ndarray, sizes: tuple[int, ...], draws: int, full_fit_seconds: float) -> float:
    """The curve's cost, guessed from the full fit's: fitting time taken as linear in the images."""
    n, k = len(y), len(np.unique(y))
    return draws * full_fit_seconds * sum(min(1.0, s * k / n) for s in sizes_to_run(y, sizes))


class Labelled(NamedTuple):
    """Codes and their labels."""

    X: np.ndarray
    y: np.ndarray


def label_curve(fit: Fit, train: Labelled, val: Labelled, *, sizes: tuple[int, ...] = DEFAULT_SIZES, draws: int = 5,
                seed: int = 0, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per size: {per_class, n_train (per draw), accuracy (per draw), mean, std, chosen
    (per draw), chosen_by, seconds}. The full train set is not a row: the run itself is that point."""
    (X, y), (X_val, y_val) = train, val
    rows = []
    for size in sizes_to_run(y, sizes):
        t0 = time.perf_counter()
        accs, ns, chosen, how = [], [], [], ""
        for d in range(draws):
            idx = draw(y, size, np.random.default_rng([seed, size, d]))
            model, value, how = fit(X[idx], y[idx], seed)
            accs.append(float((model.predict(X_val) == y_val).mean()))
            ns.append(len(idx))
            chosen.append(value)
        rows.append({"per_class": size, "n_train": ns, "accuracy": accs, "mean": float(np.mean(accs)),
                     "std": float(np.std(accs)), "chosen": chosen, "chosen_by": how,
                     "seconds": time.perf_counter() - t0})
        if progress is not None:
            progress(rows[-1])
    return rows
