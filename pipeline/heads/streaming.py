"""An out-of-core head: SGDClassifier trained with partial_fit on codes read from the HDF5 file in
chunks, so its memory follows the chunk size, not the number of images.

Pass 1 learns the feature scaling (StandardScaler.partial_fit) on the fitting rows. The setting
(the regularisation `alpha`) is chosen on a held-out part of train: each row is held out with
probability `holdout`, decided by a generator seeded by (seed, chunk start), so the same rows are
held out on every pass and in every run. Each alpha is trained for `epochs` passes over the fitting
rows (chunks in a seeded order) and scored on the held-out rows; the best alpha is refit on all of
train the same way. Val is scored chunk by chunk too. Written around sklearn because no estimator
there reads an HDF5 file in chunks; the learning itself is sklearn's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .. import UserError

ALPHAS = (1e-5, 1e-4, 1e-3, 1e-2)


@dataclass
class Chunks:
    """Rows of one split of a features file, `rows` at a time; `reads` logs every (start, stop)
    read from the file, which is how the tests check that memory follows the chunk size."""

    path: Path
    split: str
    rows: int = 65536
    reads: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self):
        if self.rows < 1:
            raise UserError(f"chunks of {self.rows} rows: --chunk-rows must be at least 1")
        with h5py.File(self.path, "r") as f:
            self.n, self.dim = f[self.split]["codes"].shape

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        return self.read(range(0, self.n, self.rows))

    def read(self, starts) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start, codes, labels) of each chunk beginning at `starts`, read one at a time."""
        with h5py.File(self.path, "r") as f:
            codes, labels = f[self.split]["codes"], f[self.split]["labels"]
            for s in starts:
                e = min(s + self.rows, self.n)
                self.reads.append((s, e))
                yield s, codes[s:e], labels[s:e].astype(np.int64)


def held_out(start: int, n: int, fraction: float, seed: int) -> np.ndarray:
    """Which of the n rows from `start` are held out: the same on every pass and every run."""
    return np.random.default_rng([seed, start]).random(n) < fraction


def _fit(chunks: Chunks, classes: np.ndarray, alpha: float, loss: str, epochs: int, seed: int,
         scaler: StandardScaler, keep) -> SGDClassifier:
    clf = SGDClassifier(loss=loss, alpha=alpha, random_state=seed)
    order = np.random.default_rng(seed)
    starts = list(range(0, chunks.n, chunks.rows))
    for _ in range(epochs):
        for s, X, y in chunks.read(order.permutation(starts).tolist()):
            m = keep(s, len(y))
            if m.any():
                clf.partial_fit(scaler.transform(X[m]), y[m], classes=classes)
    return clf


def _accuracy(chunks: Chunks, model, mask) -> float:
    right = total = 0
    for s, X, y in chunks:
        m = mask(s, len(y))
        if m.any():
            right += int((model.predict(X[m]) == y[m]).sum())
            total += int(m.sum())
    return right / total if total else float("nan")


def fit_streaming(chunks: Chunks, classes: np.ndarray, *, loss: str = "log_loss", alphas=ALPHAS, epochs: int = 5,
                  holdout: float = 0.1, seed: int = 0, progress=None) -> tuple[Pipeline, dict]:
    """(fitted Pipeline(scale, SGDClassifier), how the setting was chosen)."""
    fit_rows = lambda s, n: ~held_out(s, n, holdout, seed)  # noqa: E731
    hold_rows = lambda s, n: held_out(s, n, holdout, seed)  # noqa: E731
    scaler = StandardScaler()
    for s, X, _ in chunks:
        m = fit_rows(s, len(X))
        if m.any():
            scaler.partial_fit(X[m])
    tried = []
    for alpha in alphas:
        clf = _fit(chunks, classes, alpha, loss, epochs, seed, scaler, fit_rows)
        tried.append({"value": alpha, "holdout_accuracy": _accuracy(chunks, Pipeline([("scale", scaler),
                                                                                      ("clf", clf)]), hold_rows)})
        if progress:
            progress(tried[-1])
    best = max(tried, key=lambda t: (t["holdout_accuracy"], -t["value"]))  # ties: the stronger regularisation
    everything = lambda s, n: np.ones(n, dtype=bool)  # noqa: E731
    full_scaler = StandardScaler()
    for _, X, _ in chunks:
        full_scaler.partial_fit(X)
    final = _fit(chunks, classes, best["value"], loss, epochs, seed, full_scaler, everything)
    return Pipeline([("scale", full_scaler), ("clf", final)]), {
        "alpha": best["value"], "holdout_accuracy": best["holdout_accuracy"], "tried": tried,
        "rule": f"alpha chosen on {holdout:.0%} of train held out (rows drawn by a generator seeded by (seed, chunk "
                f"start)), {epochs} passes per alpha, then refit on all of train", "chunk_rows": chunks.rows}


def predict_streaming(chunks: Chunks, model) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(predictions, probabilities or None, decision values or None) of every row, chunk by chunk."""
    from .scores import scores_of

    parts = [scores_of(model, X) for _, X, _ in chunks]
    cat = lambda i: None if parts[0][i] is None else np.concatenate([p[i] for p in parts])  # noqa: E731
    return cat(0), cat(1), cat(2)


def fits_in_memory(path: Path) -> bool:
    """Whether the file's codes (and views) take under half of the memory available now."""
    with h5py.File(path, "r") as f:
        need = sum(f[g][d].size * 4 for g in f if isinstance(f[g], h5py.Group) for d in ("codes", "views") if d in f[g])
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return True
    return need < free / 2
