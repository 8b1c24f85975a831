"""A fair fight: the heads choose their setting by CV on train, so fine-tuning chooses its learning
rate too, on a stratified held-out part of train (never val or test), from a small grid around the
recipe's. Each candidate runs the whole recipe (same epochs and schedule) on the rest of train and
is scored on the held-out images at its last epoch, as the run itself is; the cost of every trial
is counted in the run's compute.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

from .. import UserError

if TYPE_CHECKING:
    from ..images.datasets import Decoded
    from .job import Job


def held_out(data: Decoded, fraction: float, seed: int, crop: int) -> Decoded:
    """Train split in two, stratified and seeded: the first part trains, the held-out part plays
    val (for the fast loop its kept images are centre-cropped as val's are)."""
    y = np.array([r.label for r in data.train])
    if np.bincount(y)[np.unique(y)].min() < 2:
        raise UserError("--tune-lr holds out part of train: every class needs at least 2 training images")
    n_out = max(int(round(fraction * len(y))), len(np.unique(y)))
    fit, out = next(StratifiedShuffleSplit(1, test_size=n_out, random_state=seed).split(np.zeros(len(y)), y))
    fit, out = np.sort(fit), np.sort(out)
    part = replace(data, train=[data.train[i] for i in fit], val=[data.train[i] for i in out], seconds=0.0)
    if data.train_images is not None:
        import torch
        from torchvision.transforms import v2

        part.train_images = [data.train_images[i] for i in fit]
        part.val_images = torch.stack([v2.functional.center_crop(data.train_images[i], [crop, crop]) for i in out])
    return part


def tune_lr(job: Job, grid: tuple[float, ...], fraction: float) -> dict:
    """Each learning rate of `grid` trained on train less a held-out part and scored there; the
    best (ties: the recipe's, then the smaller) is what the run trains with. Returns the record."""
    from .loop import fit
    from .train import build, loop_phases, sgd

    r = job.recipe
    part = held_out(job.data, fraction, r.seed, r.pre.crop)
    trials, t0 = [], time.perf_counter()
    for lr in grid:
        recipe = replace(r, lr=lr)
        trial = replace(job, recipe=recipe, data=part, inputs={**job.inputs, "tune_lr_trial": lr})
        _, model = build(recipe, len(part.classes), copy.deepcopy(job.bb))  # every trial from the same weights
        training = sgd(recipe, model, job.device)
        print(f"tuning lr {lr:g}: {len(part.train)} train images, {len(part.val)} held out")
        with tempfile.TemporaryDirectory(prefix=".tune-") as tmp:
            history = fit(trial, training, loop_phases(trial, training), Path(tmp)).history
        trials.append({"lr": lr, "held_out_accuracy": history[-1]["val_acc"],
                       "seconds": sum(h["seconds"] for h in history)})
    best = max(trials, key=lambda t: (t["held_out_accuracy"], t["lr"] == r.lr, -t["lr"]))
    print(f"tuned lr: {best['lr']:g} (held-out accuracy {best['held_out_accuracy']:.2%}; "
          + ", ".join(f"{t['lr']:g}: {t['held_out_accuracy']:.1%}" for t in trials) + ")")
    return {"chosen": best["lr"], "recipe_lr": r.lr, "grid": list(grid), "trials": trials,
            "held_out": len(part.val), "trained_on": len(part.train), "fraction": fraction,
            "selection": f"last-epoch accuracy on {len(part.val)} train images held out (stratified, seeded)",
            "seconds": time.perf_counter() - t0}
