"""The test split, scored once by the finished model: images no choice has seen (val chose the
epoch protocol's best and the verdict's method; CV or held-out train chose the settings), so the
verdict can cite a number that is not optimistic.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.devices import resolve_workers
from ..images.datasets import eval_images
from ..runs import folder as runs
from ..runs import metrics
from .fast import normalized

if TYPE_CHECKING:
    from .job import Job


@torch.inference_mode()
def test_probabilities(job: Job, model: torch.nn.Module) -> tuple[list, np.ndarray]:
    """(the usable test records, their softmax probabilities) under the eval transform and the
    weights' own normalisation, as val was scored."""
    r, device = job.recipe, job.device
    loader = torch.utils.data.DataLoader(eval_images(job.data.root, job.test, r.pre), batch_size=r.batch_size,
                                         num_workers=resolve_workers(r.workers))
    model.eval()
    kept, probs, i = [], [], 0
    for x, why in loader:
        ok = [k for k, w in enumerate(why) if not w]
        kept += [job.test[i + k] for k in ok]
        i += len(why)
        if ok:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.bf16):  # as the run trained
                out = model(normalized(x[ok].to(device), r.pre))
            probs.append(out.float().softmax(1).cpu().numpy())
    return kept, np.concatenate(probs) if probs else np.zeros((0, len(job.data.classes)), np.float32)


def score_test(job: Job, model: torch.nn.Module) -> dict:
    """{"test": scores, "test_predictions": one row per image} for the run's record; {} without a test split."""
    if not job.test:
        return {}
    recs, probs = test_probabilities(job, model)
    y = np.array([rec.label for rec in recs])
    pred = probs.argmax(1)
    confidence, loss, _ = metrics.per_image(y, probs)
    return {"test": metrics.scores(y, pred, job.data.classes, probs),
            "test_predictions": runs.predictions([rec.path for rec in recs], y, pred, confidence, loss)}
