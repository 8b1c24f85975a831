"""The records of a finished fine-tuning run: model.json (what `predict` reloads), predictions.csv
and metrics.json (the last epoch primary, the best epoch apart), with the method's names, the
hyperparameters it ran with and what the model costs to use (runs.cost: the harness every method
is timed with).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..heads.reject import confidence_rule
from ..images.augment import describe
from ..core.devices import BF16
from ..runs import folder as runs
from ..runs import metrics
from ..runs.cost import run_cost

if TYPE_CHECKING:
    from .checkpoint import Best, Progress
    from .job import Job, Recipe


def write_record(job: Job, progress: Progress, run_dir: Path, test: dict | None = None) -> dict:
    """model.json, predictions.csv and metrics.json of a finished run in `run_dir` (`test`: the test
    split's scores and predictions, evaluate.score_test); returns the metrics.json document."""
    r, data, (history, best, probs) = job.recipe, job.data, progress
    runs.write_model(run_dir, model_spec(job) | {"reject": confidence_rule(probs)})
    y_val = job.y_val
    pred = probs.argmax(1)
    confidence, loss, kind = metrics.per_image(y_val, probs)
    preds = runs.predictions([x.path for x in data.val], y_val, pred, confidence, loss)
    per_epoch = [h["train_seconds"] for h in history]
    doc = runs.record(
        subject(job), val=metrics.scores(y_val, pred, data.classes, probs), selection="last epoch",
        seconds=seconds(job, history), preds=preds, score_kind=kind, command=job.command,
        mode=r.mode, loop=r.loop, head=None, data_root=str(data.root), epochs=r.epochs,
        hyperparameters=run_hyperparameters(job),
        best_val=best_val(job, best),
        history="history.json",
        seconds_per_epoch=metrics.mean_epoch_seconds(per_epoch),
        seconds_per_epoch_all=float(np.mean(per_epoch)),
        check_seconds=0.0 if r.fast else data.seconds,  # reference: the up-front decode check of every file
        skipped=data.skipped, inputs=job.inputs, config=job.config,
        lr_selection=job.tuning or {"chosen": r.lr, "selection": "the recipe's fixed learning rate (not tuned)"},
        repeats=job.repeats,
        cost=run_cost(run_dir, job.device, "bf16" if job.precision == BF16 else "fp32"),
        **(test or {}),
    )
    runs.write_predictions(run_dir, preds, data.classes, kind)
    runs.write_metrics(run_dir, doc)
    return doc


def model_spec(job: Job) -> dict:
    """model.json: the classifier and the transform its predictions are made from, normalisation
    included (predict and export read it back with Preprocess.from_spec)."""
    r, bb, codes = job.recipe, job.bb, job.codes
    # a head trained on cached codes predicts from images transformed as those codes were
    tf = codes.header.transform if codes else r.pre.spec(r.fast)
    return {"kind": "finetune", "backbone": bb.name, "weights": bb.weights_id, "weights_arg": r.weights,
            "weights_sha256": bb.weights.sha256, "seed": r.seed, "classes": job.data.classes,
            **{k: tf[k] for k in ("resize", "crop", "interpolation", "mean", "std") if k in tf},
            "fast_decode": r.fast or bool(codes and tf.get("decode") != "PIL full"), "file": "final.pt"}


def subject(job: Job) -> runs.Subject:
    short, method = method_names(job.recipe.mode, job.recipe.loop)
    if job.tuning:
        short, method = f"{short}, lr tuned", f"{method}; learning rate chosen on held-out train images"
    else:
        method = f"{method}; the recipe's fixed learning rate"
    data, bb = job.data, job.bb
    return runs.Subject(method, short, "finetune", data.dataset, data.classes, bb.name, bb.weights_id,
                        len(data.train), len(data.val), job.device_name, job.recipe.seed)


def seconds(job: Job, history: list[dict]) -> dict:
    """Where the run's time went: the epochs, the one-time decode (fast loop), the last epoch's
    val pass, compiling, and for --loop codes the extraction of the codes and views it trained on."""
    r, codes = job.recipe, job.codes
    out = {"train": sum(h["seconds"] for h in history), "decode": job.data.seconds if r.fast else 0.0,
           "predict": history[-1]["seconds"] - history[-1]["train_seconds"]}
    if r.compile:
        out["compile"] = sum(h.get("compile_seconds", 0.0) for h in history)
    if job.tuning:
        out["tune"] = job.tuning["seconds"]  # every trial of the learning-rate search
    if job.repeats:
        out["repeats"] = job.repeats["seconds"]  # --repeats: the recipe again on each re-drawn split
    if codes:
        out["extract"] = (codes.header.extract_seconds or 0.0) + codes.header.views[r.splits[0]]["seconds"]
    return out


def best_val(job: Job, best: Best) -> dict:
    y_val, classes = job.y_val, job.data.classes
    return {"epoch": best.epoch, **metrics.scores(y_val, best.probs.argmax(1), classes, best.probs),
            "selection": "best epoch on val (reference protocol)"}


def run_hyperparameters(job: Job) -> dict:
    """hyperparameters(), with what training on cached views changes."""
    r, codes = job.recipe, job.codes
    if not codes:
        return hyperparameters(r, job.precision)
    tf = codes.header.transform  # the codes' normalisation, which the head trained on
    return hyperparameters(r, job.precision) | {k: tuple(tf[k]) for k in ("mean", "std") if k in tf} | {
        "train_source": f"{codes.header.views[r.splits[0]]['n']} cached augmented views per image "
                        "(one drawn per image per epoch)", "trunk_mode": "eval", "features_file": r.features}


def hyperparameters(r: Recipe, precision: str) -> dict:
    pre = r.pre
    return {
        "optimizer": "SGD",
        "lr": r.lr,
        "momentum": r.momentum,
        "weight_decay": 0.0,
        "scheduler": "StepLR",
        "step_size": r.step_size,
        "gamma": r.gamma,
        "batch_size": r.batch_size,
        "epochs": r.epochs,
        "loss": "cross-entropy",
        "train_transform": describe(pre.crop),
        "val_transform": f"Resize({pre.resize}, {pre.interpolation}) + CenterCrop({pre.crop}) ({pre.source})",
        "mean": pre.mean,  # the weights' own: ImageNet's for torchvision's, the pretrained_cfg's for timm's
        "std": pre.std,
        "train_source": f"decoded once, shorter side {pre.resize} (PIL draft)" if r.fast
        else "full PIL decode every epoch",
        "precision": precision,
        "channels_last": r.fast,
        "trunk_mode": "eval" if r.frozen and r.fast else "train",
        **({"augment": "batched (one torchvision.ops.roi_align per batch)" if r.batched else
            "per image (torchvision antialiased resize)", "compile": r.compile} if r.fast else {}),
    }


def method_names(mode: str, loop: str) -> tuple[str, str]:
    """(short name, description) of a fine-tuning run. The two frozen schemes differ in more than
    speed: the fast loop keeps the trunk's BatchNorm in eval mode (a linear head on augmented
    codes), the tutorial's loop leaves it in train mode, so its running statistics drift with
    every batch; they are named apart so nobody reads one's number as the other's."""
    tutorial = loop == "reference"
    if loop == "codes":
        return ("frozen, BN eval (cached views)", "frozen trunk with its BatchNorm in eval mode, new linear head "
                "trained on augmented views cached by `features --views K`, one per image per epoch: the fast "
                "frozen scheme without a backbone pass while training")
    if mode == "full":
        return (("full FT (tutorial loop)", "full fine-tuning, the tutorial's own loop (reference implementation)")
                if tutorial else ("full FT", "full fine-tuning, fast loop (decode once, augment on the device)"))
    if tutorial:
        return ("frozen, BN train (tutorial loop)",
                "frozen trunk with its BatchNorm in train mode (statistics drift), new linear head, augmentation: "
                "the tutorial's frozen scheme and loop")
    return ("frozen, BN eval", "frozen trunk with its BatchNorm in eval mode (fixed statistics), new linear head, "
            "augmentation: fast loop")
