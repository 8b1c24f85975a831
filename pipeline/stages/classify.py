"""Fit classical heads on cached CNN codes, choose hyperparameters by CV on train, score on val once.

Usage: python -m pipeline classify --features FILE.h5 --head softmax|linsvc|linear|knn|all --out RUNS_DIR
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from sklearn.model_selection import PredefinedSplit, StratifiedKFold

from .. import UserError, __version__
from ..heads import label_curve
from ..runs import folder as runs
from ..heads import streaming
from ..codes.store import Codes, Header, SplitCodes, read_attrs, read_codes, read_split
from ..core.cli import Settings, command_line, opt
from ..images.scan import check_classes
from ..images.scan import scan
from ..heads.registry import HEADS, Head, scores_of
from ..runs.metrics import per_image, scores
from ..heads.search import PathSearch, path_search
from ..codes.weights import Weights


@dataclass(frozen=True)
class Config(Settings):
    seed: int = opt(0, "random seed (CV folds, the linear head's init and order)")
    features: Path = opt(Path(""), "the HDF5 codes file written by `features`", required=True)
    head: str = opt("all", "which head to fit, or all: every in-memory head when the codes fit in memory, else "
                           "sgd", tuple(HEADS) + ("sgd", "all"))
    out: Path = opt(Path("reports/runs"), "runs folder: one sub-folder per head is written")
    data: str = opt("", "the image folder the codes came from: when given, a stale cache is refused")
    folds: int = opt(5, "stratified CV folds on train (fewer when a class has fewer images)")
    train_split: str = opt("train", "split to fit and cross-validate on")
    val_split: str = opt("val", "split scored once, at the end")
    jobs: int = opt(0, "CV fits run in parallel (0 = one per core)")
    force: bool = opt(False, "refit even when a head's run folder was made from the same inputs")
    label_curve: str = opt("auto", "val accuracy against training images per class, for the report's label "
                           "efficiency: on, off, or auto (on when its estimated cost is under a minute)",
                           ("auto", "on", "off"))
    label_sizes: str = opt("1,2,5,10,20,50", "label curve: training images per class to draw (the full set is added)")
    label_draws: int = opt(5, "label curve: random draws per size")
    chunk_rows: int = opt(65536, "sgd: codes read from the file this many rows at a time (its memory follows this)")
    sgd_loss: str = opt("log_loss", "sgd: log_loss (probabilities) or hinge (a linear SVM)", ("log_loss", "hinge"))
    views: int = opt(-1, "augmented views per train image to train on besides its code: -1 = all the file holds")
    tta: int = opt(0, "test-time views per val image to average (probabilities or margins): 0 = all the file holds, "
                      "1 = the centre crop only")

    def __post_init__(self):
        if self.label_draws < 1 or not self.sizes:
            raise UserError(f"--label-draws must be at least 1 and --label-sizes a comma-separated list of positive "
                            f"integers (got {self.label_draws}, {self.label_sizes!r})")
        if self.folds < 2:
            raise UserError(f"--folds must be at least 2 (got {self.folds})")
        if self.jobs < 0:
            raise UserError(f"--jobs must be 0 (one per core) or more (got {self.jobs})")


    @property
    def sizes(self) -> tuple[int, ...]:
        try:
            sizes = tuple(int(v) for v in self.label_sizes.split(",") if v.strip())
        except ValueError:
            return ()
        return sizes if all(v >= 1 for v in sizes) else ()


def check_fresh(codes: Codes, data: Path) -> None:
    """Refuse codes that no longer describe the images under `data`."""
    s = scan(data, tuple(codes.splits))
    if s.classes != codes.classes or s.name != codes.header.dataset:
        raise UserError(f"{codes.path} holds codes of dataset {codes.header.dataset!r} {codes.classes}, "
                        f"not of {str(data)!r} {s.classes}")
    if s.digest() != codes.header.inputs.get("image_list"):
        raise UserError(
            f"{codes.path} is stale: images under {str(data)!r} changed since extraction; re-run `make features`"
        )


def cv_folds(y: np.ndarray, folds: int, seed: int, per_image: int = 1) -> StratifiedKFold | PredefinedSplit:
    """Stratified folds of the training images. With `per_image` rows per image (its code and its
    augmented views, image-major) the images are split and each image's rows follow it, so no
    image has views on both sides of a fold."""
    images = y[::per_image]
    counts = np.bincount(images)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        raise UserError(f"class {int(np.flatnonzero(counts == smallest)[0])} has a single training image: "
                        "cross-validation needs at least 2 per class")
    cv = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=seed)
    if per_image == 1:
        return cv
    fold_of_image = np.empty(len(images), dtype=int)
    for k, (_, test) in enumerate(cv.split(np.zeros(len(images)), images)):
        fold_of_image[test] = k
    return PredefinedSplit(np.repeat(fold_of_image, per_image))


def fit_head(name: str, X: np.ndarray, y: np.ndarray, folds: int, seed: int, jobs: int = 1,
             progress: bool = False, per_image: int = 1) -> PathSearch:
    """CV on the training codes only, along the head's path; the refit best is `.best_estimator_`."""
    head, cv = HEADS[name], cv_folds(y, folds, seed, per_image)
    fold_size = min(len(tr) for tr, _ in cv.split(X, y))
    # k-NN cannot ask for more neighbours than a CV training fold holds
    values = [v for v in head.values if head.param != "clf__n_neighbors" or v <= fold_size]
    short = head.param.removeprefix("clf__")

    def say(t: dict):
        print(f"  {name} {short}={t['value']:g}: CV {t['mean']:.2%} ± {t['std']:.1%} ({t['seconds']:.1f}s)", flush=True)
    return path_search(head.make(seed), head.param, values, X, y, cv, warm=head.warm, patience=head.patience,
                       jobs=jobs or -1, progress=say if progress else None)


def subset_fit(name: str, folds: int) -> label_curve.Fit:
    """How the label curve fits a head on a drawn subset: CV on the subset when every class has two
    images, else (one image per class) the middle of the head's path, fitted as it is."""
    head = HEADS[name]

    def fit(X: np.ndarray, y: np.ndarray, seed: int):
        if np.bincount(y)[np.unique(y)].min() >= 2:
            s = fit_head(name, X, y, folds, seed, jobs=1)  # tiny fits: worker processes cost more than they save
            return s.best_estimator_, s.best_params_[head.param], f"CV on the drawn subset only ({s.n_splits_}-fold)"
        values = [v for v in head.values if head.param != "clf__n_neighbors" or v <= len(y)]
        value = values[len(values) // 2]
        return (head.make(seed).set_params(**{head.param: value}).fit(X, y), value,
                "middle of the path (one image per class: no CV possible)")
    return fit


def curve(cfg: Config, codes: Codes, name: str, fit_s: float) -> dict | None:
    """The label curve of one head, or None when it is off (or, on auto, would take a minute or more)."""
    tr, va = codes.splits[cfg.train_split], codes.splits[cfg.val_split]
    estimate = label_curve.estimate_seconds(tr.labels, cfg.sizes, cfg.label_draws, fit_s)
    if cfg.label_curve == "off" or not label_curve.sizes_to_run(tr.labels, cfg.sizes):
        return None
    if cfg.label_curve == "auto" and estimate >= 60:
        print(f"  {name} label curve skipped: about {estimate:.0f}s (--label-curve on runs it)", flush=True)
        return None
    t0 = time.perf_counter()
    rows = label_curve.label_curve(
        subset_fit(name, cfg.folds), tr.codes, tr.labels, va.codes, va.labels, sizes=cfg.sizes,
        draws=cfg.label_draws, seed=cfg.seed,
        progress=lambda r: print(f"  {name} {r['per_class']:>4d} per class: val {r['mean']:.1%} "
                                 f"± {r['std']:.1%} over {len(r['accuracy'])} draws", flush=True))
    return {"sizes": list(cfg.sizes), "draws": cfg.label_draws, "rows": rows, "estimated_s": estimate,
            "seconds": time.perf_counter() - t0}


@dataclass(frozen=True)
class Views:
    """The views a head trains and scores on: K augmented views per train image besides its code,
    T test-time views per val image (the first is the code)."""

    k: int
    t: int

    @property
    def suffix(self) -> str:
        return f"-views{self.k}-tta{self.t}" if self.k or self.t > 1 else ""

    def describe(self) -> str:
        return ", ".join(x for x in (f"+{self.k} views" if self.k else "", f"TTA {self.t}" if self.t > 1 else "") if x)


def views_of(cfg: Config, codes: Codes) -> Views:
    """The views asked for (-1 / 0: all the file holds); UserError when the file holds fewer."""
    tr, va = codes.splits[cfg.train_split], codes.splits[cfg.val_split]
    k_have = 0 if tr.views is None else tr.views.shape[1]
    t_have = 1 + (0 if va.views is None else va.views.shape[1])
    k, t = (k_have if cfg.views < 0 else cfg.views), (t_have if cfg.tta == 0 else cfg.tta)
    if k > k_have or t > t_have:
        raise UserError(f"{cfg.features} holds {k_have} augmented views per train image and {t_have} test-time views "
                        f"per val image, not --views {k} / --tta {t}; run `features --views {k} --tta {t}` first")
    return Views(k, t)


def train_rows(split: SplitCodes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) with each image's code followed by its first k views (image-major rows)."""
    if not k:
        return split.codes, split.labels
    X = np.concatenate([split.codes[:, None], split.views[:, :k]], axis=1)
    return X.reshape(-1, X.shape[-1]), np.repeat(split.labels, k + 1)


def val_views(split: SplitCodes, t: int) -> np.ndarray:
    """N x D codes, or N x t x D when test-time views are averaged."""
    return split.codes if t == 1 else np.concatenate([split.codes[:, None], split.views[:, :t - 1]], axis=1)


def views_cost(codes: Codes, cfg: Config, v: Views) -> float:
    """The extraction seconds these views cost: the codes, and the share of each split's views used."""
    h, total = codes.header, codes.header.extract_seconds or 0.0
    for split, used in ((cfg.train_split, v.k), (cfg.val_split, v.t - 1)):
        rec = h.views.get(split) or {}
        if used and rec.get("n"):
            total += rec.get("seconds", 0.0) * used / rec["n"]
    return total


def run_dir(cfg: Config, codes: Codes, name: str, v: Views = Views(0, 1)) -> Path:
    h = codes.header
    return Path(cfg.out) / runs.run_name(h.dataset, h.backbone, Weights.parse(h.weights_arg).tag, name + v.suffix)


def head_inputs(cfg: Config, codes: Codes, name: str, v: Views = Views(0, 1)) -> dict:
    """Everything that determines a head's run: a rerun with the same is a hit that does no work."""
    head, h = HEADS.get(name) or SGD_HEAD, codes.header
    used = {s: (h.views.get(s) or {}).get("fingerprint") for s, n in ((cfg.train_split, v.k), (cfg.val_split, v.t - 1))
            if n}
    return {"features_fingerprint": h.fingerprint, "head": name, "param": head.param,
            "views": v.k, "tta": v.t, "views_fingerprints": used,
            "values": list(head.values), "warm": head.warm, "patience": head.patience, "folds": cfg.folds,
            "seed": cfg.seed, "train_split": cfg.train_split, "val_split": cfg.val_split, "cnncodes": __version__,
            "label_curve": [cfg.label_curve, list(cfg.sizes), cfg.label_draws],
            **({"sgd": [cfg.sgd_loss, cfg.chunk_rows]} if name == "sgd" else {})}


def write_run(cfg: Config, codes: Codes, name: str, search: PathSearch, fit_s: float,
              labels: dict | None = None, v: Views = Views(0, 1)) -> tuple[Path, dict]:
    """Score the chosen head on val once (averaged over T test-time views) and write its run
    folder; returns (folder, val scores)."""
    va, model = codes.splits[cfg.val_split], search.best_estimator_
    t0 = time.perf_counter()
    pred, proba, decision = scores_of(model, val_views(va, v.t))
    predict_s = time.perf_counter() - t0
    val = scores(va.labels, pred, codes.classes, proba)
    confidence, loss, kind = per_image(va.labels, proba, decision)
    preds = runs.predictions(va.paths, va.labels, pred, confidence, loss)
    with runs.staged(run_dir(cfg, codes, name, v)) as run:
        runs.write_predictions(run, preds, codes.classes, kind)
        write_records(cfg, codes, name, search, fit_s, run, val, (preds, kind), predict_s, labels, v)
    return run_dir(cfg, codes, name, v), val


def write_records(cfg: Config, codes: Codes, name: str, search: PathSearch, fit_s: float, run: Path, val: dict,
                  preds: tuple[list[dict], str], predict_s: float, labels: dict | None = None,
                  v: Views = Views(0, 1)) -> None:
    h, va, model = codes.header, codes.splits[cfg.val_split], search.best_estimator_
    runs.save_head(run / "model.npz", model)
    runs.write_model(run, {
        "kind": "head", "head": name, "backbone": h.backbone, "weights": h.weights, "weights_arg": h.weights_arg,
        "weights_sha256": h.weights_sha256, "seed": h.seed, "classes": codes.classes,
        **{k: h.transform[k] for k in ("resize", "crop", "interpolation", "mean", "std") if k in h.transform},
        "fast_decode": h.transform["decode"] != "PIL full", "file": "model.npz",
        "features_fingerprint": h.fingerprint})
    runs.write_metrics(run, runs.record(
        method=f"{h.backbone} codes + {(HEADS.get(name) or SGD_HEAD).title}" + (
            f", trained on each image's code and {v.k} augmented views" if v.k else "") + (
            f", val scored by the mean over {v.t} test-time views" if v.t > 1 else ""),
        short=name + (f" ({v.describe()})" if v.describe() else ""), stage="classify", dataset=h.dataset,
        classes=codes.classes, backbone=h.backbone, weights=h.weights,
        n_train=len(codes.splits[cfg.train_split].labels), n_val=len(va.labels), val=val,
        selection=f"CV on train ({search.n_splits_}-fold)" if search.n_splits_ else
        "10% of train held out (seeded rows), then refit on all",
        seconds={"extract": views_cost(codes, cfg, v), "fit": fit_s, "predict": predict_s}, views=v.k, tta=v.t,
        device=f"cpu (codes: {h.device})", seed=cfg.seed, preds=preds[0],
        score_kind=preds[1], command=command_line(cfg, "classify"), features_command=h.command or None,
        head=name, hyperparameters={k.removeprefix("clf__"): v for k, v in search.best_params_.items()},
        cv_score=float(search.best_score_), cv_path=search.cv_scores, cv_untried=search.untried,
        solver=getattr(model[-1], "solver_", None), features_file=str(cfg.features),
        features_fingerprint=h.fingerprint, data_root=h.data_root, weights_sha256=h.weights_sha256,
        label_curve=labels, inputs=head_inputs(cfg, codes, name, v)))


SGD_HEAD = Head("SGD (out of core: codes streamed from the file in chunks)", lambda seed: None, "clf__alpha",
                streaming.ALPHAS)


def fits_in_memory(path: Path) -> bool:
    """Whether the file's codes (and views) take under half of the memory available now."""
    import os

    with h5py.File(path, "r") as f:
        need = sum(f[g][d].size * 4 for g in f if isinstance(f[g], h5py.Group) for d in ("codes", "views") if d in f[g])
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return True
    return need < free / 2


def classify_streaming(cfg: Config) -> Path:
    """The sgd head: train codes streamed from the file in chunks, never loaded whole."""
    header = Header.from_attrs(read_attrs(cfg.features))
    labels = read_split(cfg.features, cfg.train_split, labels_only=True)
    check_classes(labels.labels, header.classes, f"{cfg.features} ({cfg.train_split})")
    codes = Codes(Path(cfg.features), header, {cfg.train_split: labels,
                                               cfg.val_split: read_split(cfg.features, cfg.val_split)})
    if cfg.data:
        check_fresh(codes, Path(cfg.data))
    where, inputs = run_dir(cfg, codes, "sgd"), head_inputs(cfg, codes, "sgd")
    before = None if cfg.force else runs.up_to_date(where, inputs)
    if before is not None:
        print(f"sgd      up to date: {where} (val acc {before['val']['accuracy']:.2%}); nothing to do", flush=True)
        return where
    t0 = time.perf_counter()
    model, chosen = streaming.fit_streaming(
        streaming.Chunks(Path(cfg.features), cfg.train_split, cfg.chunk_rows), np.arange(len(header.classes)),
        loss=cfg.sgd_loss, seed=cfg.seed,
        progress=lambda t: print(f"  sgd alpha={t['value']:g}: held-out {t['holdout_accuracy']:.2%}", flush=True))
    fit_s = time.perf_counter() - t0
    search = PathSearch(model, {"clf__alpha": chosen["alpha"]}, chosen["holdout_accuracy"], 0,
                        [{"value": t["value"], "mean": t["holdout_accuracy"]} for t in chosen["tried"]])
    run, val = write_run(cfg, codes, "sgd", search, fit_s)
    print(f"sgd      val acc {val['accuracy']:.2%}  held-out {chosen['holdout_accuracy']:.2%}  alpha "
          f"{chosen['alpha']:g}  fit {fit_s:.2f}s  -> {run}", flush=True)
    return run


def classify(cfg: Config) -> list[Path]:
    read_attrs(cfg.features)  # a missing, partial or foreign file is a one-line error before anything else
    if cfg.head == "sgd" or (cfg.head == "all" and not fits_in_memory(Path(cfg.features))):
        if cfg.head == "all":
            print(f"{cfg.features}: the codes take more than half the free memory: running the out-of-core sgd head "
                  "only (--head softmax etc. to insist)", flush=True)
        return [classify_streaming(cfg)]
    codes = read_codes(cfg.features)
    for split in (cfg.train_split, cfg.val_split):
        if split not in codes.splits:
            raise UserError(f"{cfg.features} has no split {split!r} (it has {list(codes.splits)})")
    if cfg.data:
        check_fresh(codes, Path(cfg.data))
    tr: SplitCodes = codes.splits[cfg.train_split]
    check_classes(tr.labels, codes.classes, f"{cfg.features} ({cfg.train_split})")
    v = views_of(cfg, codes)
    X, y = train_rows(tr, v.k)
    if v.describe():
        print(f"training on {len(X)} rows ({len(tr.labels)} images x {v.k + 1}: code + views), "
              f"val scored over {v.t} view{'s' * (v.t > 1)}", flush=True)
    done = []
    for name in list(HEADS) if cfg.head == "all" else [cfg.head]:
        where = run_dir(cfg, codes, name, v)
        before = None if cfg.force else runs.up_to_date(where, head_inputs(cfg, codes, name, v))
        if before is not None:
            print(f"{name:8s} up to date: {where} was made from the same codes and settings "
                  f"(val acc {before['val']['accuracy']:.2%}); nothing to do (--force refits)", flush=True)
            done.append(where)
            continue
        t0 = time.perf_counter()
        search = fit_head(name, X, y, cfg.folds, cfg.seed, cfg.jobs, progress=True, per_image=v.k + 1)
        fit_s = time.perf_counter() - t0
        labels = None if v.describe() else curve(cfg, codes, name, fit_s)  # the label curve: plain codes only
        run, val = write_run(cfg, codes, name, search, fit_s, labels, v)
        lo, hi = val["accuracy_ci95"]
        stop = f" (stopped early: {len(search.untried)} not tried)" if search.stopped_early else ""
        print(f"{name:8s} val acc {val['accuracy']:.2%} [{lo:.1%}, {hi:.1%}]  CV {search.best_score_:.2%}  "
              f"{json.dumps(search.best_params_)}{stop}  fit {fit_s:.2f}s  -> {run}", flush=True)
        done.append(run)
    return done


def run(cfg: Config) -> None:
    classify(cfg)
