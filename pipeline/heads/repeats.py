"""How sure is a head's score? Train and val pooled and re-drawn R times (stratified, seeded, each
draw the size of the original val), the head chosen by CV on each re-drawn train and scored once
on its re-drawn val. Each draw's split depends on (seed, repeat) only, so every head sees the same
R splits and their scores pair up by repeat (metrics.corrected_resampled_t, which allows for the
overlap of the training sets; a plain paired t would be far too confident)."""
from __future__ import annotations

import time

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

from .cv import fit_head


def splits(y: np.ndarray, n_test: int, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) indices of each repeat: stratified, reproducible from (seed, repeat)."""
    return [next(StratifiedShuffleSplit(1, test_size=n_test, random_state=np.random.RandomState([seed, r])
                                        .randint(2**31)).split(np.zeros(len(y)), y)) for r in range(repeats)]


def repeated_scores(name: str, X: np.ndarray, y: np.ndarray, n_test: int, repeats: int, *, folds: int = 5,
                    seed: int = 0, jobs: int = 0) -> dict:
    """The head's accuracy on each of `repeats` re-drawn splits of the pooled codes X, y."""
    t0, accs, chosen = time.perf_counter(), [], []
    for r, (tr, te) in enumerate(splits(y, n_test, repeats, seed)):
        search = fit_head(name, X[tr], y[tr], folds, seed, jobs)
        accs.append(float((search.best_estimator_.predict(X[te]) == y[te]).mean()))
        chosen.append(next(iter(search.best_params_.values())))
        print(f"  {name} repeat {r + 1}/{repeats}: {accs[-1]:.2%}", flush=True)
    return {"repeats": repeats, "seed": seed, "n_train": int(len(y) - n_test), "n_test": int(n_test),
            "accuracy": accs, "mean": float(np.mean(accs)), "sd": float(np.std(accs, ddof=1)) if repeats > 1 else 0.0,
            "chosen": chosen, "seconds": time.perf_counter() - t0,
            "split": "train and val pooled, re-drawn stratified with val's size; CV on each train"}
