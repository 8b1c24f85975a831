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


# A draw's fit is a CV search of its own on the drawn images, with a cost per fit and per setting
# whatever their number: on hymenoptera's codes (2 classes, 244 train) a draw of 1 to 50 per class
# took 0.15-0.5 of the full fit's time (k-NN the most: each draw still scores all of val), never
# the 0.01-0.4 the images alone would say.
DRAW_FLOOR = 0.5


def estimate_seconds(y: np.ndarray, sizes: tuple[int, ...], draws: int, full_fit_seconds: float) -> float:
    """The curve's cost in this process, guessed from the full fit's: each draw's fit taken as
    linear in the images, and at least DRAW_FLOOR of the full fit."""
    n, k = len(y), len(np.unique(y))
    return draws * full_fit_seconds * sum(max(DRAW_FLOOR, min(1.0, s * k / n)) for s in sizes_to_run(y, sizes))


class Labelled(NamedTuple):
    """Codes and their labels."""

    X: np.ndarray
    y: np.ndarray


def label_curve(fit: Fit, train: Labelled, val: Labelled, *, sizes: tuple[int, ...] = DEFAULT_SIZES, draws: int = 5,
                seed: int = 0, jobs: int = 1, progress: Callable[[dict], None] | None = None) -> list[dict]:
    """One row per size: {per_class, n_train (per draw), accuracy (per draw), mean, std (the sample
    standard deviation over the draws, ddof 1; 0 for one draw), chosen (per draw), chosen_by,
    seconds}. The full train set is not a row: the run itself is that point.
    Every (size, draw) is its own fit; a size's draws run in this process while that is quick, in
    `jobs` processes once the sizes left would take long enough, like CV's folds (search.Workers; -1: every core);
    each draw's images depend on (seed, size, draw) only, so the rows do not depend on `jobs`."""
    from joblib import delayed

    from .search import Workers

    rows, todo = [], sizes_to_run(train.y, sizes)
    with Workers(jobs) as parallel:
        for i, size in enumerate(todo):
            rows.append(_row(size, parallel([delayed(_one_draw)(fit, train, val, size, d, seed) for d in range(draws)],
                                            left=len(todo) - i - 1)))
            if progress is not None:
                progress(rows[-1])
    return rows


def _row(size: int, mine: list[dict]) -> dict:
    accs = [r["accuracy"] for r in mine]
    return {"per_class": size, "n_train": [r["n"] for r in mine], "accuracy": accs, "mean": float(np.mean(accs)),
            "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0, "chosen": [r["value"] for r in mine],
            "chosen_by": mine[-1]["how"], "seconds": float(sum(r["seconds"] for r in mine))}


def _one_draw(fit: Fit, train: Labelled, val: Labelled, size: int, d: int, seed: int) -> dict:
    t0 = time.perf_counter()
    idx = draw(train.y, size, np.random.default_rng([seed, size, d]))
    model, value, how = fit(train.X[idx], train.y[idx], seed)
    return {"accuracy": float((model.predict(val.X) == val.y).mean()), "n": len(idx), "value": value, "how": how,
            "seconds": time.perf_counter() - t0}


def within_budget(estimates: dict[str, float], budget: float) -> list[str]:
    """The names whose curves fit in one `budget` of seconds for the whole command, cheapest
    first (a skipped expensive head leaves room for the cheap ones)."""
    chosen, spent = [], 0.0
    for name, s in sorted(estimates.items(), key=lambda kv: kv[1]):
        if spent + s <= budget:
            chosen.append(name)
            spent += s
    return chosen
