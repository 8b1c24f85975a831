"""The Encoder: a frozen, BN-folded trunk on a device, uint8 batches in, float32 codes out."""
from __future__ import annotations

import torch

from ..codes.backbone import Backbone, FirstCalls, compiled, fold_batchnorm
from ..core.devices import BF16, precision_for
from ..core.timing import measure, plan
from ..images.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize


class Encoder:
    """The frozen trunk on a device: uint8 batches in, float32 codes out, in `precision` (a
    resolved one, core.devices: fp32 or BF16, bf16 autocast with the codes cast back to float32
    after the trunk). Unset: bf16 on a GPU, fp32 on a CPU (what export's check compares with).

    With `compile` the trunk goes through torch.compile (backbone.compiled); the first call at each
    batch shape compiles, and its time is kept apart in `compile_seconds`."""

    def __init__(self, bb: Backbone, device: torch.device, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD,
                 compile: bool = False, precision: str = ""):
        self.device, self.cuda, self.mean, self.std = device, device.type == "cuda", tuple(mean), tuple(std)
        # channels_last is faster on CUDA and on CPU alike (oneDNN): measured 1.3-1.5x on 2 cores
        trunk, self.bn_folded = fold_batchnorm(bb.trunk)
        self.model = trunk.to(device, memory_format=torch.channels_last)
        self.precision = precision or precision_for(device.type, "auto" if self.cuda else "fp32")
        self.first_calls = FirstCalls(compile, device.type)
        if compile:
            self.model = compiled(self.model, device.type)

    @property
    def compile_seconds(self) -> float:
        return self.first_calls.seconds

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x.to(self.device, non_blocking=True), True, self.mean, self.std)
        with self.first_calls(tuple(x.shape)), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                              enabled=self.precision == BF16):
            out = self.model(x).float()
        return out.clone() if self.first_calls.on and self.cuda else out  # CUDA graph memory is reused next call



def decoded_crops(crop: int, batch: int) -> torch.Tensor:
    """A seeded random batch of decoded uint8 crops (N x 3 x crop x crop): what the cost harness
    (core.timing) times every model on, heads' trunks and fine-tuned networks alike."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, generator=g)


def trunk_cost(enc: Encoder, crop: int) -> dict:
    """What the trunk costs per image with core.timing's harness (the codes a head needs for a new
    image: the same Encoder predict uses)."""
    batch, warmup, repeats = plan()
    x = decoded_crops(crop, batch)
    return measure(lambda: enc(x).cpu(), batch, repeats, warmup, part="backbone", crop=crop,
                   device=str(enc.device), precision=enc.precision)
