"""A fine-tuning run from its Job: the model (`build`), its optimizer and schedule (`sgd`), the
loop's Phases (`loop_phases`: fast, cached views or the tutorial's), the shared epoch loop and the
records (`finetune`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .evaluate import score_test
from .loop import Phases, Training, fit
from .record import write_record

if TYPE_CHECKING:
    from ..codes.backbone import Backbone
    from .job import Job, Recipe


def build(recipe: Recipe, n_classes: int, bb: Backbone | None = None) -> tuple[Backbone, torch.nn.Module]:
    """classifier(trunk, head) with requires_grad set for the mode; same seed -> same init."""
    from ..codes.backbone import classifier, load_backbone

    bb = bb or load_backbone(recipe.backbone, recipe.weights, recipe.seed)
    torch.manual_seed(recipe.seed)  # the new head's init depends on the seed only, whatever the weights
    model = classifier(bb, n_classes)
    model.requires_grad_(recipe.mode == "full")
    model.head.requires_grad_(True)
    return bb, model


def sgd(recipe: Recipe, model: torch.nn.Module, device: torch.device) -> Training:
    """The recipe's SGD and StepLR over what the mode trains (frozen: the head only)."""
    params = model.head.parameters() if recipe.frozen else model.parameters()
    # fused SGD on a GPU: one kernel per step for all parameters, the same update (the reference
    # loop keeps the tutorial's plain optimizer)
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                                fused=device.type == "cuda" and recipe.fast or None)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe.step_size, gamma=recipe.gamma)
    return Training(model, optimizer, scheduler)


def loop_phases(job: Job, t: Training) -> Phases:
    """The Phases of the job's loop: fast, codes (cached views) or reference (the tutorial's)."""
    if job.recipe.loop == "codes":
        from .cached import codes_phases as make
    elif job.recipe.fast:
        from .fast import fast_phases as make
    else:
        from .reference import reference_phases as make
    return make(job, t)


def finetune(job: Job, model: torch.nn.Module, work: Path, run_dir: Path) -> dict:
    """Train `model` in `work` (the staged run folder of `run_dir`) and write the run's records
    there; returns the metrics.json document."""
    r, data = job.recipe, job.data
    t = sgd(r, model, job.device)
    p = loop_phases(job, t)
    print(f"{data.dataset}: {len(data.train)} train / {len(data.val)} val images; {job.bb.name} ({job.bb.weights_id}), "
          f"{r.mode} fine-tuning, {r.loop} loop on {job.device} ({job.precision}); run folder {run_dir}")
    progress = fit(job, t, p, work)
    return write_record(job, progress, work, score_test(job, t.model))
