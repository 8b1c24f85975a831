"""Fit classical heads on cached CNN codes, choose hyperparameters by CV on train, score on val once.

Usage: python -m pipeline classify --features FILE.h5 --head softmax|linsvc|linear|knn|all --out RUNS_DIR
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import UserError, __version__
from ..codes.matching import check_fresh, excluded
from ..codes.store import Codes, Header, SplitCodes, read_attrs, read_codes, read_split
from ..codes.weights import Weights
from ..core.cli import Settings, at_most_cores, command_line, opt
from ..core.files import atomic_write, json_digest
from ..heads import label_curve, streaming
from ..heads.cv import cv_folds, fit_head, subset_fit
from ..heads.registry import HEADS, SGD_HEAD
from ..heads.reject import codes_rule
from ..heads.repeats import repeated_scores
from ..heads.search import PathSearch
from ..heads.views import PLAIN, Views, train_rows, views_cost, views_of
from ..images.exclude import read_exclusions
from ..images.groups import group_ids, read_groups
from ..images.scan import check_classes
from ..runs import folder as runs
from ..runs.head_run import Fitted, Scored, head_cost, head_spec, score_split


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
    val_split: str = opt("val", "split scored once, at the end: it compares the methods")
    test_split: str = opt("test", "split scored once besides val when the codes hold it: no choice sees it, so the "
                                  "report's verdict cites it")
    jobs: int = opt(0, "CV fits run in parallel (0 = one per core)")
    exclude: str = opt("", "a list of image paths to leave out, one per line (audit's exclude.txt); recorded")
    groups: str = opt("", "a CSV of images that must stay on one side of each CV fold (path,group; or path,other "
                          "pairs, as the audit's duplicates.csv): photos of one scene, crops of one photo; recorded")
    force: bool = opt(False, "refit even when a head's run folder was made from the same inputs")
    label_curve: str = opt("auto", "val accuracy against training images per class, for the report's label "
                           "efficiency: on, off, or auto (on when its estimated cost is under a minute)",
                           ("auto", "on", "off"))
    label_sizes: str = opt("1,2,5,10,20,50", "label curve: training images per class to draw (the full set is added)")
    label_draws: int = opt(5, "label curve: random draws per size")
    repeats: int = opt(0, "also pool train and val and re-draw them this many times (stratified, seeded, val's "
                          "size), CV and score on each: the head's mean ± sd over the draws (plain codes only)")
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
        at_most_cores(self, "jobs")
        if not 0 <= self.repeats <= 1000 or self.repeats == 1:
            raise UserError(f"--repeats must be 0 (off) or 2 to 1000 (got {self.repeats})")
        if self.chunk_rows < 1 or self.views < -1 or self.tta < 0:
            raise UserError(f"--chunk-rows must be at least 1, --views -1 (all) or more and --tta 0 (all) or more "
                            f"(got {self.chunk_rows}, {self.views}, {self.tta})")
        if self.test_split in (self.train_split, self.val_split):
            raise UserError(f"--test-split {self.test_split!r} must differ from --train-split and --val-split")
        if self.groups and self.repeats:
            raise UserError("--repeats re-draws train and val by image, not by --groups: one group would sit on "
                            "both sides; use one of the two")
        if self.train_split == self.val_split:
            raise UserError(f"--train-split and --val-split are both {self.train_split!r}: settings chosen by CV on "
                            "the images they are scored on would report an optimistic score; give two splits")

    @property
    def sizes(self) -> tuple[int, ...]:
        try:
            sizes = tuple(int(v) for v in self.label_sizes.split(",") if v.strip())
        except ValueError:
            return ()
        return sizes if all(v >= 1 for v in sizes) else ()


def groups_of(cfg: Config, codes: Codes) -> np.ndarray:
    """The --groups id of each training image, in the codes' order (images.groups)."""
    return group_ids(codes.splits[cfg.train_split].paths, read_groups(cfg.groups), f"--groups {cfg.groups!r}")


def curve(cfg: Config, codes: Codes, name: str) -> dict:
    """The label curve of one head: draws fitted in parallel like CV's folds."""
    tr, va = codes.splits[cfg.train_split], codes.splits[cfg.val_split]
    t0 = time.perf_counter()
    rows = label_curve.label_curve(
        subset_fit(name, cfg.folds, tr.codes), label_curve.Labelled(tr.codes, tr.labels),
        label_curve.Labelled(va.codes, va.labels), sizes=cfg.sizes, draws=cfg.label_draws, seed=cfg.seed,
        jobs=cfg.jobs or -1,
        progress=lambda r: print(f"  {name} {r['per_class']:>4d} per class: val {r['mean']:.1%} "
                                 f"± {r['std']:.1%} over {len(r['accuracy'])} draws", flush=True))
    return {"sizes": list(cfg.sizes), "draws": cfg.label_draws, "rows": rows, "seconds": time.perf_counter() - t0}


CLASSIFY_FLOOR = 10.0  # seconds classify may take, curves included, however quick the extraction was


def curves_to_run(cfg: Config, codes: Codes, fitted: list[Fitted], spent: float = 0.0) -> list[str]:
    """Which heads get a label curve. `auto` shares one budget across the whole command: the
    extraction time of these codes (at least CLASSIFY_FLOOR), less 10% for starting and writing
    the runs, less what the command has `spent` so far (reading, the heads' fitting), so
    classify, curves included, costs no more than extracting the codes did; cheapest curves first."""
    tr = codes.splits[cfg.train_split]
    plain = [f for f in fitted if not f.views.label()]  # the curve is drawn on plain codes only
    if cfg.label_curve == "off" or not label_curve.sizes_to_run(tr.labels, cfg.sizes):
        return []
    if cfg.label_curve == "on":
        return [f.name for f in plain]
    # in this process (search.Workers pools only work that takes seconds): no division by the cores
    estimates = {f.name: label_curve.estimate_seconds(tr.labels, cfg.sizes, cfg.label_draws, f.fit_s) for f in plain}
    allowed = max(CLASSIFY_FLOOR, codes.header.extract_seconds or 0.0)
    budget = max(0.0, 0.9 * allowed - max(spent, sum(f.fit_s for f in fitted)))  # 10%: starting, writing the runs
    chosen = label_curve.within_budget(estimates, budget)
    for name in sorted(estimates.keys() - set(chosen)):
        print(f"  {name} label curve skipped: about {estimates[name]:.0f}s, over the {budget:.0f}s the curves share "
              "(--label-curve on runs it)", flush=True)
    return chosen


def run_dir(cfg: Config, codes: Codes, name: str, v: Views = PLAIN) -> Path:
    h = codes.header
    tail = v.suffix + ("-excluded" if cfg.exclude else "")  # runs without the excluded images sit beside the others
    return Path(cfg.out) / runs.run_name(h.dataset, h.backbone, Weights.parse(h.weights_arg).tag, name + tail)


def head_inputs(cfg: Config, codes: Codes, name: str, v: Views = PLAIN, groups: np.ndarray | None = None) -> dict:
    """Everything that determines a head's run: a rerun with the same is a hit that does no work.
    `groups`: the --groups id of each training image (groups_of), read once by the caller."""
    head, h = HEADS.get(name) or SGD_HEAD, codes.header
    used = {s: (h.views.get(s) or {}).get("fingerprint") for s, n in ((cfg.train_split, v.k), (cfg.val_split, v.t - 1))
            if n}
    return {"features_fingerprint": h.fingerprint, "head": name, "param": head.param,
            "views": v.k, "tta": v.t, "views_fingerprints": used,
            "values": list(head.values), "bounds": head.bounds, "warm": head.warm, "patience": head.patience,
            "folds": cfg.folds,
            "seed": cfg.seed, "train_split": cfg.train_split, "val_split": cfg.val_split,
            "test_split": cfg.test_split if cfg.test_split in codes.splits else None, "cnncodes": __version__,
            "label_curve": [cfg.label_curve, list(cfg.sizes), cfg.label_draws], "repeats": cfg.repeats,
            **({"exclude": sorted(read_exclusions(cfg.exclude))} if cfg.exclude else {}),
            **({"groups": json_digest(groups.tolist())} if groups is not None else {}),
            **({"sgd": [cfg.sgd_loss, cfg.chunk_rows]} if name == "sgd" else {})}


def write_run(cfg: Config, codes: Codes, f: Fitted) -> tuple[Path, dict]:
    """Score the chosen head on val once (and on test, when the codes hold one) and write its run
    folder; returns (folder, val scores)."""
    s = score_split(codes, cfg.val_split, f)
    test = score_split(codes, cfg.test_split, f) if cfg.test_split in codes.splits else None
    with runs.staged(run_dir(cfg, codes, f.name, f.views)) as run:
        runs.write_predictions(run, s.preds, codes.classes, s.kind)
        runs.save_head(run / "model.npz", f.search.best_estimator_)
        runs.write_model(run, head_spec(codes, f.name) | reject_rule(cfg, codes, run))
        runs.write_metrics(run, head_record(cfg, codes, f, s) | (
            {"test": test.val, "test_predictions": test.preds} if test else {}))
    if test:
        print(f"{f.name:8s} test acc {test.val['accuracy']:.2%} ({test.val['correct']} of {test.val['n']}), "
              "scored once", flush=True)
    return run_dir(cfg, codes, f.name, f.views), s.val


def reject_rule(cfg: Config, codes: Codes, run: Path) -> dict:
    """{"reject": the rule `predict --reject` applies}, its reference codes saved in `run` (heads.reject);
    nothing for the out-of-core head, whose train codes are never all in memory."""
    tr, va = codes.splits[cfg.train_split], codes.splits[cfg.val_split]
    if len(tr.codes) != len(tr.labels) or not len(va.labels):  # labels only: streamed in chunks
        return {}
    ref, rule = codes_rule(tr.codes, va.codes)
    atomic_write(run / rule["file"], lambda fh: np.save(fh, ref))
    return {"reject": rule}


def head_record(cfg: Config, codes: Codes, f: Fitted, s: Scored) -> dict:
    """metrics.json of a head's run."""
    h, v, search = codes.header, f.views, f.search
    gone = len(f.inputs.get("exclude", ()))  # named, so the table tells the two runs apart
    tags = [t for t in (v.label(), f"{gone} excluded" if cfg.exclude else "") if t]
    subject = runs.Subject(
        f"{h.backbone} codes + {(HEADS.get(f.name) or SGD_HEAD).title}" + (
            f", trained on each image's code and {v.k} augmented views" if v.k else "") + (
            f", val scored by the mean over {v.t} test-time views" if v.t > 1 else "") + (
            f", without the {gone} images of {Path(cfg.exclude).name}" if cfg.exclude else ""),
        f.name + "".join(f" ({t})" for t in tags), "classify", h.dataset, codes.classes, h.backbone,
        h.weights, len(codes.splits[cfg.train_split].labels), len(s.preds), f"cpu (codes: {h.device})", cfg.seed)
    return runs.record(
        subject, val=s.val,
        selection=f"CV on train ({search.n_splits_}-fold{', grouped: ' + Path(cfg.groups).name if cfg.groups else ''})"
        if search.n_splits_ else
        "10% of train held out (seeded rows), then refit on all",
        seconds={"extract": views_cost(codes, cfg.train_split, cfg.val_split, v), "fit": f.fit_s,
                 "predict": s.predict_s, **({"repeats": f.repeats["seconds"]} if f.repeats else {})},
        views=v.k, tta=v.t, preds=s.preds, score_kind=s.kind, command=command_line(cfg, "classify"),
        features_command=h.command or None, head=f.name,
        hyperparameters={k.removeprefix("clf__"): x for k, x in search.best_params_.items()},
        cv_score=float(search.best_score_), cv_path=search.cv_scores, cv_untried=search.untried, cv_edge=search.edge,
        solver=getattr(search.best_estimator_[-1], "solver_", None), features_file=str(cfg.features),
        features_fingerprint=h.fingerprint, data_root=h.data_root, weights_sha256=h.weights_sha256,
        label_curve=f.curve, repeats=f.repeats, inputs=f.inputs,
        cost={"trunk": h.cost or None, "head": head_cost(search.best_estimator_, codes.splits[cfg.val_split].codes)})


def classify_streaming(cfg: Config, held: contextlib.ExitStack) -> Path:
    """The sgd head: train codes streamed from the file in chunks, never loaded whole."""
    if cfg.groups:  # its held-out part is seeded rows, not groups: a group would sit on both sides
        raise UserError("--groups keeps groups apart in the in-memory heads' CV; the out-of-core sgd head holds out "
                        "seeded rows instead: leave out --groups, or use a head that fits in memory")
    header = Header.from_attrs(read_attrs(cfg.features))
    labels = read_split(cfg.features, cfg.train_split, labels_only=True)
    check_classes(labels.labels, header.classes, f"{cfg.features} ({cfg.train_split})")
    codes = Codes(Path(cfg.features), header, {cfg.train_split: labels,
                                               cfg.val_split: read_split(cfg.features, cfg.val_split)})
    if cfg.data:
        check_fresh(codes, Path(cfg.data))
    where, inputs = run_dir(cfg, codes, "sgd"), head_inputs(cfg, codes, "sgd")
    held.enter_context(runs.locked(where, "classify run"))
    before = runs.up_to_date(where, inputs, cfg.force)
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
    run, val = write_run(cfg, codes, Fitted("sgd", search, fit_s, inputs=inputs))
    print(f"sgd      val acc {val['accuracy']:.2%}  held-out {chosen['holdout_accuracy']:.2%}  alpha "
          f"{chosen['alpha']:g}  fit {fit_s:.2f}s  -> {run}", flush=True)
    return run


def classify(cfg: Config) -> list[Path]:
    """Fit and write each head's run. Its run folder is held under a lock (core.files.exclusive)
    from the check that it is up to date until it is written: a second classify into the same folder
    at the same time is refused at once, never silently lost to the other."""
    with contextlib.ExitStack() as held:
        return _classify(cfg, held)


def _classify(cfg: Config, held: contextlib.ExitStack) -> list[Path]:
    t_start = time.perf_counter()
    read_attrs(cfg.features)  # a missing, partial or foreign file is a one-line error before anything else
    if cfg.head == "sgd" or (cfg.head == "all" and not streaming.fits_in_memory(Path(cfg.features))):
        if cfg.head == "all":
            print(f"{cfg.features}: the codes take more than half the free memory: running the out-of-core sgd head "
                  "only (--head softmax etc. to insist)", flush=True)
        return [classify_streaming(cfg, held)]
    codes = read_codes(cfg.features)
    for split in (cfg.train_split, cfg.val_split):
        if split not in codes.splits:
            raise UserError(f"{cfg.features} has no split {split!r} (it has {list(codes.splits)})")
    if cfg.data:
        check_fresh(codes, Path(cfg.data))
    if cfg.exclude:
        codes = excluded(codes, cfg.exclude)
    tr: SplitCodes = codes.splits[cfg.train_split]
    check_classes(tr.labels, codes.classes, f"{cfg.features} ({cfg.train_split})", least=2)
    v = views_of(codes, cfg.train_split, cfg.val_split, cfg.views, cfg.tta)
    X, y = train_rows(tr, v.k)
    if v.label():
        print(f"training on {len(X)} rows ({len(tr.labels)} images x {v.k + 1}: code + views), "
              f"val scored over {v.t} view{'s' * (v.t > 1)}", flush=True)
    done, fitted = {}, []
    groups = groups_of(cfg, codes) if cfg.groups else None  # the file read once, for every head
    for name in list(HEADS) if cfg.head == "all" else [cfg.head]:
        where, inputs = run_dir(cfg, codes, name, v), head_inputs(cfg, codes, name, v, groups)
        held.enter_context(runs.locked(where, "classify run"))
        before = runs.up_to_date(where, inputs, cfg.force)
        if before is not None:
            print(f"{name:8s} up to date: {where} was made from the same codes and settings "
                  f"(val acc {before['val']['accuracy']:.2%}); nothing to do (--force refits)", flush=True)
            done[name] = where
            continue
        t0 = time.perf_counter()
        folds = cv_folds(y, cfg.folds, cfg.seed, v.k + 1, groups, codes.classes) if groups is not None else cfg.folds
        search = fit_head(name, X, y, folds, cfg.seed, cfg.jobs, progress=True, per_image=v.k + 1)
        fit_s = time.perf_counter() - t0  # the repeats below measure the score's spread: not the head's cost
        again = repeated(cfg, codes, name) if cfg.repeats and not v.label() else None
        fitted.append(Fitted(name, search, fit_s, v, None, again, inputs))
    with_curve = curves_to_run(cfg, codes, fitted, time.perf_counter() - t_start)
    for f in fitted:
        done[f.name] = write_and_say(cfg, codes, replace(f, curve=curve(cfg, codes, f.name))
                                     if f.name in with_curve else f)
    return [done[name] for name in (list(HEADS) if cfg.head == "all" else [cfg.head])]


def write_and_say(cfg: Config, codes: Codes, f: Fitted) -> Path:
    run, val = write_run(cfg, codes, f)
    lo, hi = val["accuracy_ci95"]
    s = f.search
    stop = f" (stopped early: {len(s.untried)} not tried)" if s.stopped_early else ""
    print(f"{f.name:8s} val acc {val['accuracy']:.2%} [{lo:.1%}, {hi:.1%}]  CV {s.best_score_:.2%}  "
          f"{json.dumps(s.best_params_)}{stop}  fit {f.fit_s:.2f}s  -> {run}", flush=True)
    return run


def repeated(cfg: Config, codes: Codes, name: str) -> dict:
    """The head on --repeats re-drawn splits of train and val pooled (heads.repeats)."""
    tr, va = codes.splits[cfg.train_split], codes.splits[cfg.val_split]
    X, y = np.concatenate([tr.codes, va.codes]), np.concatenate([tr.labels, va.labels])
    r = repeated_scores(name, X, y, len(va.labels), cfg.repeats, folds=cfg.folds, seed=cfg.seed, jobs=cfg.jobs)
    r["pooled"] = json_digest(list(tr.paths) + list(va.paths))  # the verdict pairs draws of the same images
    print(f"{name:8s} over {cfg.repeats} re-drawn splits: {r['mean']:.2%} ± {r['sd']:.2%} (sd)", flush=True)
    return r


def run(cfg: Config) -> None:
    classify(cfg)
