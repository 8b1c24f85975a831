"""How sure is a fine-tune's score? `finetune --repeats R` does what `classify --repeats R` does, at R
times the cost: train and val pooled in the scan's order (train's images, then val's: the order in
which classify pools the codes of the same images) and re-drawn R times by heads.repeats.splits, so
repeat r holds the same images for a head and for a fine-tune and the report pairs them by repeat
(metrics.corrected_resampled_t). On each draw the whole recipe runs again from the same pretrained
weights on the re-drawn train and is scored at its last epoch on the re-drawn val (the run's own
protocol); with --tune-lr the learning rate is chosen again on each re-drawn train (a held-out part
of it, tune.py), as CV runs again for a head on each draw. The repeats' time is recorded apart
(seconds.repeats): it measures how sure the score is, not what making the model cost.
"""
from __future__ import annotations

import copy
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.files import json_digest
from ..heads.repeats import splits

if TYPE_CHECKING:
    import torch

    from ..images.datasets import Decoded
    from ..images.scan import ImageRecord
    from .job import Job


def pooled(data: Decoded) -> tuple[list[ImageRecord], np.ndarray]:
    """(records, labels) of train and val pooled: train's usable images, then val's, each in scan order."""
    recs = [*data.train, *data.val]
    return recs, np.array([r.label for r in recs], dtype=np.int64)


def draws(data: Decoded, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) indices into `pooled(data)` of each repeat: classify's draws (val's size)."""
    return splits(pooled(data)[1], len(data.val), repeats, seed)


def _pool_images(job: Job) -> list[torch.Tensor]:
    """Fast loop: every pooled image at the size train's are kept (shorter side = resize), val's
    decoded again for it (decode_once kept only their eval crop): any of them may train now."""
    import torch
    from torchvision.transforms import v2

    from ..core.devices import resolve_workers
    from ..images.datasets import ImageFiles

    r, data, pre = job.recipe, job.data, job.recipe.pre
    kept = v2.Compose([v2.Resize(pre.resize, interpolation=v2.InterpolationMode(pre.interpolation), antialias=True),
                       v2.PILToTensor()])  # the train view decode_once keeps, for val's images
    loader = torch.utils.data.DataLoader(ImageFiles(data.root, data.val, kept, pre.resize), batch_size=None,
                                         num_workers=resolve_workers(r.workers))
    return [*data.train_images, *(x.to(job.device) for x, _ in loader)]


def redrawn(data: Decoded, images: list | None, tr: np.ndarray, te: np.ndarray, crop: int) -> Decoded:
    """The Decoded of one draw: pooled images `tr` train, `te` play val (for the fast loop the kept
    images of `te` centre-cropped: the eval crop, as decode_once makes val's)."""
    recs, _ = pooled(data)
    part = replace(data, train=[recs[i] for i in tr], val=[recs[i] for i in te], skipped={}, seconds=0.0)
    if images is not None:
        import torch
        from torchvision.transforms import v2

        part.train_images = [images[i] for i in tr]
        part.val_images = torch.stack([v2.functional.center_crop(images[i], [crop, crop]) for i in te])
    return part


def repeated_scores(job: Job, repeats: int, grid: tuple[float, ...] = (), holdout: float = 0.2) -> dict:
    """The recipe's last-epoch accuracy on each of `repeats` re-drawn splits of train and val pooled,
    in the record's shape of heads.repeats.repeated_scores (the report and verdict read both alike).
    `grid`: --tune-lr's rates, chosen again on each re-drawn train; empty: the recipe's lr."""
    from .loop import fit
    from .train import build, loop_phases, sgd
    from .tune import tune_lr

    t0, r, data = time.perf_counter(), job.recipe, job.data
    images = _pool_images(job) if data.train_images is not None else None
    accs, lrs = [], []
    for k, (tr, te) in enumerate(draws(data, repeats, r.seed)):
        part = redrawn(data, images, tr, te, r.pre.crop)
        one = replace(job, data=part, test=None, tuning=None, inputs={**job.inputs, "repeat": k})
        if grid:
            one = replace(one, recipe=replace(r, lr=tune_lr(one, grid, holdout)["chosen"]))
        _, model = build(one.recipe, len(data.classes), copy.deepcopy(job.bb))  # every repeat from the same weights
        training = sgd(one.recipe, model, job.device)
        print(f"repeat {k + 1}/{repeats}: {len(part.train)} train / {len(part.val)} val images re-drawn, "
              f"lr {one.recipe.lr:g}", flush=True)
        with tempfile.TemporaryDirectory(prefix=".repeat-") as tmp:
            history = fit(one, training, loop_phases(one, training), Path(tmp)).history
        accs.append(float(history[-1]["val_acc"]))
        lrs.append(one.recipe.lr)
        print(f"  repeat {k + 1}/{repeats}: {accs[-1]:.2%} (last epoch)", flush=True)
    sd = float(np.std(accs, ddof=1)) if repeats > 1 else 0.0
    print(f"over {repeats} re-drawn splits: {np.mean(accs):.2%} ± {sd:.2%} (sd)", flush=True)
    return {"repeats": repeats, "seed": r.seed, "n_train": len(data.train), "n_test": len(data.val),
            "pooled": json_digest([rec.path for rec in pooled(data)[0]]),  # the verdict pairs draws of these images
            "accuracy": accs, "mean": float(np.mean(accs)), "sd": sd, "chosen": lrs,
            "seconds": time.perf_counter() - t0,
            "split": "train and val pooled, re-drawn stratified with val's size (the draws of classify --repeats); "
                     "the whole recipe on each re-drawn train, scored at its last epoch on its val",
            "lr_selection": "chosen again on each re-drawn train (--tune-lr: a held-out part of it)" if grid
            else "the recipe's fixed learning rate on every draw"}
