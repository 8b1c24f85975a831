"""The recipe's train augmentation, RandomResizedCrop + horizontal flip, on uint8 tensors.

Hand-written around torchvision's resize because the crops must be drawn from a seeded CPU
generator for a whole batch at once (no device sync, the same crops on CPU and GPU), which
torchvision's transforms, drawing from the global RNG per call, do not offer.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop defaults, as in the tutorial


def describe(crop: int) -> str:
    return f"RandomResizedCrop({crop}, scale={SCALE}, ratio=(3/4, 4/3)) + RandomHorizontalFlip(0.5)"


def crop_params(h: int, w: int, u: list[float]) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params driven by 22 given uniforms (10 tries x 2, then position),
    so a seeded torch.Generator decides every crop. Same distribution as torchvision's."""
    lo, hi = math.log(RATIO[0]), math.log(RATIO[1])
    for t in range(10):
        area = h * w * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[2 * t])
        ar = math.exp(lo + (hi - lo) * u[2 * t + 1])
        cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[20] * (h - ch + 1)), int(u[21] * (w - cw + 1)), ch, cw
    r = w / h  # fallback: central crop clamped to the ratio range
    cw, ch = (
        (w, int(round(w / RATIO[0]))) if r < RATIO[0] else (int(round(h * RATIO[1])), h) if r > RATIO[1] else (w, h)
    )
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def augment(images: list[torch.Tensor], crop: int, g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(crop) + RandomHorizontalFlip on uint8 CHW tensors -> uint8 N x 3 x crop x crop.

    The crops are cut from the image stored at shorter side `resize`, not from the original file:
    the same crop geometry relative to the image, but small crops are upsampled from fewer pixels.
    """
    import torch
    from torchvision.transforms import v2

    u = torch.rand(len(images), 23, generator=g).tolist()
    out = []
    for im, ui in zip(images, u):
        i, j, h, w = crop_params(im.shape[1], im.shape[2], ui)
        x = v2.functional.resize(im[:, i:i + h, j:j + w], [crop, crop], antialias=True)
        out.append(x.flip(-1) if ui[22] < 0.5 else x)
    return torch.stack(out)
