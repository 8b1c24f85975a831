"""The fine-tuning fast path (airbench style): images decoded once and kept as uint8 tensors on the
device, the recipe's augmentation applied there from a seeded generator (batched on a GPU: a few
kernels per batch, not per image), no host sync inside the step loop, bf16 autocast on CUDA and,
with `compile`, torch.compile (CUDA graphs on a GPU, whose batch-16 steps are launch-bound).
`finetune` runs it; `reference.py` is the tutorial's loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..images.augment import Crops
from ..codes.backbone import FirstCalls, compiled, fold_batchnorm
from ..images.datasets import Decoded
from ..images.transforms import normalize


def train_one_epoch(model, crops: Crops, labels, optimizer, g, batch_size: int, frozen_trunk=None, bar=None, net=None,
                    clock: FirstCalls | None = None):
    """One pass over the train images in a seeded random order; returns (mean loss, accuracy).

    With `frozen_trunk` (an eval-mode, BN-folded copy of model.trunk) only model.head learns. `net`
    is what runs the model (a compiled wrapper sharing its parameters); `clock` times first calls."""
    frozen, net = frozen_trunk is not None, net or model
    device = labels.device
    cuda = device.type == "cuda"
    clock = clock or FirstCalls(False, device.type)
    model.train()
    if frozen:
        model.trunk.eval()  # honest frozen features: BN keeps its pretrained statistics, no dropout
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    order = torch.randperm(len(labels), generator=g)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x = normalize(crops(idx.tolist(), g), channels_last=True)
        y = labels[idx.to(device, non_blocking=True)]
        with clock(("train", len(idx))):  # forward and backward compile at the first step of each size
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                if frozen:
                    with torch.no_grad():  # the trunk runs on each augmented batch but learns nothing
                        x = frozen_trunk(x).clone()  # a compiled trunk's output is overwritten next call
                    out = model.head(x)
                else:
                    out = net(x)
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss_sum += loss.detach().float() * len(idx)  # stays on the device: no sync per step
        correct += (out.argmax(1) == y).sum()
        if bar is not None:
            bar.update(1)
    return loss_sum.item() / len(labels), correct.item() / len(labels)


@torch.no_grad()
def forward(net, x: torch.Tensor, batch_size: int, images: bool, clock: FirstCalls | None = None) -> torch.Tensor:
    """net over x in batches, eval mode, float32 out; `images` means x is uint8 to normalise."""
    net.eval()
    clock = clock or FirstCalls(False, x.device.type)
    outs = []
    for b in range(0, len(x), batch_size):
        xb = normalize(x[b:b + batch_size], channels_last=True) if images else x[b:b + batch_size]
        with clock(("eval", len(xb))), torch.autocast(x.device.type, dtype=torch.bfloat16,
                                                        enabled=x.device.type == "cuda"):
            outs.append(net(xb).float().clone())  # clone: a compiled net's output is overwritten next call
    return torch.cat(outs)


def evaluate(net, x: torch.Tensor, labels: torch.Tensor, batch_size: int, images: bool = True, clock=None):
    """Val loss and softmax probabilities (numpy) of net on cached val tensors or codes."""
    logits = forward(net, x, batch_size, images, clock)
    return F.cross_entropy(logits, labels).item(), logits.softmax(1).cpu().numpy()


def fast_phases(model, optimizer, data: Decoded, device: torch.device, *, frozen: bool, seed: int, batch_size: int,
                crop: int, batched: bool = False, compile: bool = False):
    """(train phase, val phase, the generator of order and augmentation, the compile clock) of the
    fast path; the frozen trunk's one-time work counts as decode. `batched`: augmentation by one
    roi_align per batch (augment.Crops); `compile`: torch.compile, first calls timed apart."""
    model.to(device, memory_format=torch.channels_last)  # faster with oneDNN/cuDNN alike
    g = torch.Generator().manual_seed(seed)  # order + augmentation: reproducible on CPU
    train_labels = torch.tensor([r.label for r in data.train], device=device)
    val_labels = torch.tensor([r.label for r in data.val], device=device)
    clock = FirstCalls(compile, device.type)
    mark = clock.mark()
    crops = Crops(data.train_images, crop, batched)
    if batched and not crops.batched:
        print("augmentation per image: the train images' shapes differ too much to pad them into one batch tensor")
    # Frozen: the trunk never changes, so fold its BatchNorms once (faster, same function), and
    # since val has no augmentation its codes never change either: compute them once.
    frozen_trunk = fold_batchnorm(model.trunk)[0].to(memory_format=torch.channels_last) if frozen else None
    if frozen and compile:
        frozen_trunk = compiled(frozen_trunk, device.type)
    net = compiled(model, device.type) if compile and not frozen else model  # shares model's parameters
    val_x = forward(frozen_trunk, data.val_images, batch_size, True, clock) if frozen else data.val_images
    data.seconds += clock.since(mark)

    def train_phase(bar):
        return train_one_epoch(model, crops, train_labels, optimizer, g, batch_size, frozen_trunk, bar, net, clock)

    def val_phase():
        return evaluate(model.head if frozen else net, val_x, val_labels, batch_size, not frozen, clock)
    return train_phase, val_phase, g, clock


def codes_phases(model, optimizer, views, train_labels, val_codes, val_labels, device: torch.device, *, seed: int,
                 batch_size: int):
    """(train phase, val phase, generator) of the frozen scheme on cached codes: each epoch every
    train image contributes one of its cached augmented views (drawn from the seeded generator),
    as the fast frozen loop gives it one new crop; the trunk never runs. Val uses the plain codes."""
    g = torch.Generator().manual_seed(seed)
    views = torch.as_tensor(views, device=device)
    y, yv = torch.as_tensor(train_labels, device=device), torch.as_tensor(val_labels, device=device)
    val_x = torch.as_tensor(val_codes, device=device)
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
        return evaluate(model.head, val_x, yv, batch_size, images=False)
    return train_phase, val_phase, g, None
