"""--precision auto for the fast loop: a train step timed in fp32 and in bf16 (codes.autoprec
measures and decides, core.precision remembers), the first time a backbone, mode and batch size
are fine-tuned on a processor.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from ..codes.autoprec import BATCHES, measure
from ..codes.backbone import FirstCalls, fold_batchnorm
from ..core.devices import BF16
from ..images.augment import Crops
from .fast import Learner, normalized, train_step
from .train import build, sgd

if TYPE_CHECKING:
    from .job import Job


def time_steps(job: Job) -> dict:
    """--precision auto for the fast loop (codes.autoprec.measure): train steps, augmentation
    included, in fp32 and in bf16, each on its own copy of the model and its own generator seeded
    alike (the run itself starts untouched); agreement: the first step's logits."""
    r, device = job.recipe, job.device
    print(f"precision auto: timing fp32 and bf16 fine-tuning steps on {BATCHES} batches of {r.batch_size} (once on "
          "this processor, for this backbone, mode and batch size)")
    crops = Crops(job.data.train_images, r.pre.crop, r.batched)
    labels = torch.tensor([x.label for x in job.data.train], device=device)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(r.seed)).tolist()
    flat = [order[b:b + r.batch_size] for b in range(0, len(order), r.batch_size)]

    def step(bf16: bool):
        model = build(r, len(job.data.classes), copy.deepcopy(job.bb))[1].to(device, memory_format=torch.channels_last)
        model.train()
        if r.frozen:
            model.trunk.eval()  # as train_one_epoch runs it
        trunk = fold_batchnorm(model.trunk)[0].to(memory_format=torch.channels_last) if r.frozen else None
        learner = Learner(model, sgd(r, model, device).optimizer, model, trunk, FirstCalls(False, device.type), r.pre,
                          bf16)
        g = torch.Generator().manual_seed(r.seed)

        def run(idx):
            x = normalized(crops(idx, g), r.pre)
            return train_step(learner, x, labels[torch.tensor(idx, device=device)])[0].detach().float().cpu().numpy()
        return run
    batches = ((flat[i % len(flat)], len(flat[i % len(flat)])) for i in range(BATCHES))
    return measure({"fp32": step(False), BF16: step(True)}, batches)
