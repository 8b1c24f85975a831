"""The fine-tuning fast path (airbench style): images decoded once and kept as uint8 tensors on the
device, the recipe's augmentation applied there from a seeded generator (batched on a GPU: a few
kernels per batch, not per image), no host sync inside the step loop, bf16 autocast for forward and
loss where --precision resolves to it (a GPU, a CPU with native bf16; fp32 master weights and
optimizer state, the loss on float32 logits) and, with `compile`, torch.compile (CUDA graphs on a
GPU, whose batch-16 steps are launch-bound). `finetune` runs it; `reference.py` is the tutorial's
loop, `cached.py` the loop on cached views.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..codes.backbone import FirstCalls, compiled, fold_batchnorm
from ..images.augment import Crops
from ..images.transforms import normalize
from .loop import Phases

if TYPE_CHECKING:
    from ..images.transforms import Preprocess
    from .job import Job
    from .loop import Training


@dataclass(frozen=True)
class Learner:
    """What the fast loop's train step runs: the model and its optimizer; `net`, what runs the model
    (the model itself or a compiled wrapper sharing its parameters); `frozen_trunk`, an eval-mode,
    BN-folded copy of model.trunk when only model.head learns (None: the whole model learns);
    `clock`, the compile clock timing first calls; `pre`, the weights' own preprocessing, whose
    mean/std normalise each batch; `bf16`, forward and loss under bf16 autocast."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    net: torch.nn.Module
    frozen_trunk: torch.nn.Module | None
    clock: FirstCalls
    pre: Preprocess
    bf16: bool = False


def normalized(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 NCHW on the device -> float, channels_last, normalised with the weights' own mean/std
    (ImageNet's for torchvision's weights, the pretrained_cfg's for timm's)."""
    return normalize(x, True, pre.mean, pre.std)


def train_one_epoch(learner: Learner, crops: Crops, labels: torch.Tensor, g: torch.Generator, batch_size: int,
                    bar=None) -> tuple[float, float]:
    """One pass over the train images in a seeded random order; returns (mean loss, accuracy)."""
    clock, device = learner.clock, labels.device
    learner.model.train()
    if learner.frozen_trunk is not None:
        learner.model.trunk.eval()  # honest frozen features: BN keeps its pretrained statistics, no dropout
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    order = torch.randperm(len(labels), generator=g)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x = normalized(crops(idx.tolist(), g), learner.pre)
        y = labels[idx.to(device, non_blocking=True)]
        with clock(("train", len(idx))):  # forward and backward compile at the first step of each size
            out, loss = train_step(learner, x, y)
        loss_sum += loss.detach().float() * len(idx)  # stays on the device: no sync per step
        correct += (out.argmax(1) == y).sum()
        if bar is not None:
            bar.update(1)
    return loss_sum.item() / len(labels), correct.item() / len(labels)


def train_step(learner: Learner, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on a normalised batch: (logits, loss)."""
    model, frozen_trunk = learner.model, learner.frozen_trunk
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=learner.bf16):
        if frozen_trunk is not None:
            with torch.no_grad():  # the trunk runs on each augmented batch but learns nothing
                x = frozen_trunk(x).clone()  # a compiled trunk's output is overwritten next call
            out = model.head(x)
        else:
            out = learner.net(x)
        loss = F.cross_entropy(out.float(), y)  # the loss in float32 on every device
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    learner.optimizer.step()
    return out, loss


@torch.no_grad()
def forward(net, x: torch.Tensor, batch_size: int, pre: Preprocess | None, clock: FirstCalls | None = None,
            bf16: bool = False) -> torch.Tensor:
    """net over x in batches, eval mode, float32 out (bf16 autocast with `bf16`); with `pre`, x is
    uint8 images to normalise with its mean/std, without, codes."""
    net.eval()
    clock = clock or FirstCalls(False, x.device.type)
    outs = []
    for b in range(0, len(x), batch_size):
        xb = x[b:b + batch_size] if pre is None else normalized(x[b:b + batch_size], pre)
        with clock(("eval", len(xb))), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            outs.append(net(xb).float().clone())  # clone: a compiled net's output is overwritten next call
    return torch.cat(outs)


def evaluate(net, x: torch.Tensor, labels: torch.Tensor, batch_size: int, pre: Preprocess | None, clock=None,
             bf16: bool = False):
    """Val loss and softmax probabilities (numpy) of net on cached val tensors (uint8 images
    normalised as `pre` says) or codes (pre None)."""
    logits = forward(net, x, batch_size, pre, clock, bf16)
    return F.cross_entropy(logits, labels).item(), logits.softmax(1).cpu().numpy()


def fast_phases(job: Job, training: Training) -> Phases:
    """The fast path's Phases (its generator of order and augmentation, its compile clock); the
    frozen trunk's one-time work counts as decode. Batched augmentation (recipe.batched): one
    roi_align per batch (augment.Crops); recipe.compile: torch.compile, first calls timed apart."""
    r, data, device, model = job.recipe, job.data, job.device, training.model
    model.to(device, memory_format=torch.channels_last)  # faster with oneDNN/cuDNN alike
    g = torch.Generator().manual_seed(r.seed)  # order + augmentation: reproducible on CPU
    train_labels = torch.tensor([x.label for x in data.train], device=device)
    val_labels = torch.tensor([x.label for x in data.val], device=device)
    clock = FirstCalls(r.compile, device.type)
    mark = clock.mark()
    crops = Crops(data.train_images, r.pre.crop, r.batched)
    if r.batched and not crops.batched:
        print("augmentation per image: the train images' shapes differ too much to pad them into one batch tensor")
    # Frozen: the trunk never changes, so fold its BatchNorms once (faster, same function), and
    # since val has no augmentation its codes never change either: compute them once.
    frozen_trunk = fold_batchnorm(model.trunk)[0].to(memory_format=torch.channels_last) if r.frozen else None
    if r.frozen and r.compile:
        frozen_trunk = compiled(frozen_trunk, device.type)
    net = compiled(model, device.type) if r.compile and not r.frozen else model  # shares model's parameters
    val_x = data.val_images if not r.frozen else forward(frozen_trunk, data.val_images, r.batch_size, r.pre, clock,
                                                         job.bf16)
    data.seconds += clock.since(mark)
    learner = Learner(model, training.optimizer, net, frozen_trunk, clock, r.pre, job.bf16)

    def train_phase(bar):
        return train_one_epoch(learner, crops, train_labels, g, r.batch_size, bar)

    def val_phase():
        return evaluate(model.head if r.frozen else net, val_x, val_labels, r.batch_size, None if r.frozen else r.pre,
                        clock, job.bf16)
    return Phases(train_phase, val_phase, g, clock)
