"""Fit classical heads on cached CNN codes, choose hyperparameters by CV on train, score on val once.

Usage: python -m pipeline classify --features FILE.h5 --head softmax|linsvc|linear|knn|all --out RUNS_DIR
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from . import UserError
from .cache import Codes, atomic_write, read_codes
from .config import opt
from .data import scan
from .features import weights_tag
from .heads import HEADS, scores_of
from .metrics import predictions, record, scores, write_json


@dataclass(frozen=True)
class Config:
    seed: int = opt(0, "random seed (CV folds, the linear head's init and order)")
    features: Path = opt(Path(""), "the HDF5 codes file written by `features`", required=True)
    head: str = opt("all", "which head to fit, or all of them in turn", tuple(HEADS) + ("all",))
    out: Path = opt(Path("reports/runs"), "runs folder: one sub-folder per head is written")
    data: str = opt("", "the image folder the codes came from: when given, a stale cache is refused")
    folds: int = opt(5, "stratified CV folds on train (fewer when a class has fewer images)")
    train_split: str = opt("train", "split to fit and cross-validate on")
    val_split: str = opt("val", "split scored once, at the end")


def check_fresh(codes: Codes, data: Path) -> None:
    """Refuse codes that no longer describe the images under `data`."""
    s = scan(data, tuple(codes.splits))
    if s.classes != codes.classes or s.name != codes.attrs.get("dataset"):
        raise UserError(f"{codes.path} holds codes of dataset {codes.attrs.get('dataset')!r} {codes.classes}, "
                        f"not of {str(data)!r} {s.classes}")
    if s.digest() != codes.attrs["inputs"]["image_list"]:
        raise UserError(f"{codes.path} is stale: images under {str(data)!r} changed since extraction; re-run `make features`")


def cv_folds(y: np.ndarray, folds: int, seed: int) -> StratifiedKFold:
    if folds < 2:
        raise UserError(f"--folds must be at least 2 (got {folds})")
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise UserError(f"class {int(np.flatnonzero(counts == smallest)[0])} has a single training image: "
                        "cross-validation needs at least 2 per class")
    return StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)


def fit_head(name: str, X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> GridSearchCV:
    """Grid search on the training codes only; the refit best pipeline is `.best_estimator_`."""
    head, cv = HEADS[name], cv_folds(y, folds, seed)
    fold_size = min(len(tr) for tr, _ in cv.split(X, y))
    # k-NN cannot ask for more neighbours than a CV training fold holds
    grid = {k: [v for v in vs if k != "clf__n_neighbors" or v <= fold_size] for k, vs in head.grid.items()}
    search = GridSearchCV(head.make(seed), grid, cv=cv, scoring="accuracy", refit=True)
    return search.fit(X, y)


def classify(cfg: Config) -> list[Path]:
    codes = read_codes(cfg.features)
    for split in (cfg.train_split, cfg.val_split):
        if split not in codes.splits:
            raise UserError(f"{cfg.features} has no split {split!r} (it has {list(codes.splits)})")
    if cfg.data:
        check_fresh(codes, Path(cfg.data))
    a = codes.attrs
    tr, va = codes.splits[cfg.train_split], codes.splits[cfg.val_split]
    names = list(HEADS) if cfg.head == "all" else [cfg.head]
    runs = []
    for name in names:
        t0 = time.perf_counter()
        search = fit_head(name, tr.codes, tr.labels, cfg.folds, cfg.seed)
        fit_s = time.perf_counter() - t0
        model = search.best_estimator_
        t0 = time.perf_counter()
        pred, proba, score = scores_of(model, va.codes)
        predict_s = time.perf_counter() - t0
        val = scores(va.labels, pred, codes.classes, proba)
        run = Path(cfg.out) / f"{a['dataset']}-{a['backbone']}-{weights_tag(a['weights_arg'])}-{name}"
        run.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.json", "model.json"):  # written last: never beside another run's model
            (run / stale).unlink(missing_ok=True)
        atomic_write(run / "model.joblib", lambda fh: joblib.dump(model, fh))
        write_json(run / "model.json", {
            "kind": "head", "head": name, "backbone": a["backbone"], "weights": a["weights"], "weights_arg": a["weights_arg"],
            "weights_sha256": a["weights_sha256"] or None, "seed": a["seed"], "classes": codes.classes,
            "resize": a["transform"]["resize"], "crop": a["transform"]["crop"],
            "fast_decode": a["transform"]["decode"] != "PIL full", "file": "model.joblib", "features_fingerprint": a["fingerprint"]})
        write_json(run / "metrics.json", record(
            method=f"{a['backbone']} codes + {HEADS[name].title}", stage="classify", dataset=a["dataset"],
            classes=codes.classes, backbone=a["backbone"], weights=a["weights"], n_train=len(tr.labels),
            n_val=len(va.labels), val=val, selection=f"CV on train ({search.n_splits_}-fold)",
            seconds={"extract": a.get("extract_seconds"), "fit": fit_s, "predict": predict_s},
            device=f"cpu (codes: {a['device']})", seed=cfg.seed, preds=predictions(va.paths, va.labels, pred, score),
            head=name, hyperparameters={k.removeprefix("clf__"): v for k, v in search.best_params_.items()},
            cv_score=float(search.best_score_), features_file=str(cfg.features), features_fingerprint=a["fingerprint"],
            data_root=a.get("data_root"), weights_sha256=a["weights_sha256"] or None))
        lo, hi = val["accuracy_ci95"]
        print(f"{name:8s} val acc {val['accuracy']:.2%} [{lo:.1%}, {hi:.1%}]  CV {search.best_score_:.2%}  "
              f"{json.dumps(search.best_params_)}  fit {fit_s:.2f}s  -> {run}")
        runs.append(run)
    return runs


def run(cfg: Config) -> None:
    classify(cfg)
