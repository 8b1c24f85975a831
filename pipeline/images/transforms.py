"""The eval transform: what it is (`Preprocess`, recorded in caches and runs, no torch needed) and
how it is applied (`eval_transform` on PIL images, `normalize` on uint8 batches on the device;
torch is imported inside them, so reading a record never pays for it).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """The eval transform: resize the shorter side, centre crop, interpolation, normalisation.
    torchvision's enum weights carry their own (`weights.Weights.preprocess`); otherwise the
    tutorial's Resize(256) + CenterCrop(224), bilinear, ImageNet mean/std."""

    resize: int = 256
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    source: str = "default (the tutorial's)"

    def spec(self, fast_decode: bool) -> dict:
        """The transform in words, as the cache fingerprint and model.json record it."""
        return {"resize": self.resize, "crop": self.crop, "interpolation": self.interpolation, "antialias": True,
                "mean": list(self.mean), "std": list(self.std),
                "decode": f"PIL draft>={self.resize}" if fast_decode else "PIL full",
                "as_seen": "EXIF orientation applied, colour profile converted to sRGB"}

    @classmethod
    def from_spec(cls, spec: dict) -> Preprocess:
        """Back from a recorded spec (model.json); older records hold resize and crop only."""
        return cls(spec["resize"], spec["crop"], spec.get("interpolation", "bilinear"),
                   tuple(spec.get("mean", IMAGENET_MEAN)), tuple(spec.get("std", IMAGENET_STD)), "recorded")

    def describe(self) -> str:
        return f"resize {self.resize}, crop {self.crop}, {self.interpolation} ({self.source})"


def eval_transform(resize: int = 256, crop: int = 224, interpolation: str = "bilinear") -> v2.Compose:
    """PIL image -> uint8 CHW tensor; normalisation happens on the device, in `normalize`."""
    from torchvision.transforms import v2

    mode = v2.InterpolationMode(interpolation)
    return v2.Compose([v2.Resize(resize, interpolation=mode, antialias=True), v2.CenterCrop(crop), v2.PILToTensor()])


@functools.lru_cache(maxsize=None)
def _mean_std(device: torch.device, mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    # made once per device: a fresh host->GPU copy per batch would stall the stream
    import torch

    return (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
            torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)


def normalize(x: torch.Tensor, channels_last: bool, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD):
    """uint8 NCHW on the device -> normalised float (ImageNet mean/std unless given)."""
    import torch

    mean, std = _mean_std(x.device, tuple(mean), tuple(std))
    x = (x.float() - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
