"""`finetune --loop codes`: the fast frozen scheme without a backbone pass while training. The new
head trains on the augmented views that `features --views K` cached (one drawn per image per
epoch, as the fast frozen loop gives each image one new crop) and validates on the plain codes.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..images.datasets import Decoded
from ..images.scan import ImageRecord
from .fast import evaluate
from .loop import Phases

if TYPE_CHECKING:
    from ..codes.store import Codes
    from .job import Job
    from .loop import Training


def codes_as_decoded(codes: Codes, splits: tuple[str, str], root: Path) -> Decoded:
    """The records a run writes, from a features file instead of decoded images."""
    recs = {n: [ImageRecord(p, int(y), 0, 0) for p, y in zip(codes.splits[n].paths, codes.splits[n].labels)]
            for n in splits}
    return Decoded(codes.header.dataset, codes.classes, recs[splits[0]], recs[splits[1]],
                   {n: codes.splits[n].skipped for n in splits}, root=root)


def codes_phases(job: Job, training: Training) -> Phases:
    """The Phases of the frozen scheme on job.codes: each epoch every train image contributes one of
    its cached augmented views (drawn from the seeded generator); the trunk never runs. Val uses
    the plain codes."""
    device, batch_size, (model, optimizer, _) = job.device, job.recipe.batch_size, training
    tr, va = (job.codes.splits[n] for n in job.recipe.splits)
    model.to(device)
    g = torch.Generator().manual_seed(job.recipe.seed)
    views = torch.as_tensor(tr.views, device=device)
    y, yv = torch.as_tensor(tr.labels, device=device), torch.as_tensor(va.labels, device=device)
    val_x = torch.as_tensor(va.codes, device=device)
    n, k = views.shape[:2]

    def train_phase(bar):
        model.head.train()
        x = views[torch.arange(n), torch.randint(k, (n,), generator=g).to(device)]  # one view per image
        order = torch.randperm(n, generator=g).to(device)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        for b in range(0, n, batch_size):
            idx = order[b:b + batch_size]
            out = model.head(x[idx])
            loss = F.cross_entropy(out, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            correct += (out.argmax(1) == y[idx]).sum()
            if bar is not None:
                bar.update(1)
        return loss_sum.item() / n, correct.item() / n

    def val_phase():
        return evaluate(model.head, val_x, yv, batch_size, pre=None)  # codes: nothing to normalise
    return Phases(train_phase, val_phase, g)
