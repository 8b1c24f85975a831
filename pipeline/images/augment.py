"""The recipe's train augmentation, RandomResizedCrop + horizontal flip, on uint8 tensors.

Hand-written around torchvision's resize because the crops must be drawn from a seeded CPU
generator for a whole batch at once (no device sync, the same crops on CPU and GPU), which
torchvision's transforms, drawing from the global RNG per call, do not offer.

Two ways to cut and resize the crops, from the same draws (same boxes, same flips): per image
(torchvision's antialiased resize of each crop: the tutorial's filter, a few kernels per image)
or batched (one torchvision.ops.roi_align call for the whole batch: bilinear samples averaged
over each output pixel's footprint, i.e. area-averaging when shrinking; a few kernels per batch,
which is what a GPU at batch 16 needs).
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


def draws(n: int, g: torch.Generator) -> list[list[float]]:
    """The uniforms of n crops: 22 for crop_params, 1 for the flip."""
    import torch

    return torch.rand(n, 23, generator=g).tolist()


def flipped(u: list[float]) -> bool:
    """Whether the crop decided by the 23 uniforms `u` is flipped (the last one: p = 0.5)."""
    return u[22] < 0.5


def resized_crop(image: torch.Tensor, crop: int, u: list[float]) -> torch.Tensor:
    """RandomResizedCrop(crop) + RandomHorizontalFlip of one uint8 CHW tensor, decided by the 23
    uniforms `u` (draws, views.view_uniforms): torchvision's antialiased resize of the crop. The one
    body of the per-image augmentation: the fast loop's crops and the cached views alike."""
    from torchvision.transforms import v2

    i, j, h, w = crop_params(image.shape[1], image.shape[2], u)
    x = v2.functional.resize(image[:, i:i + h, j:j + w], [crop, crop], antialias=True)
    return x.flip(-1) if flipped(u) else x


def augment(images: list[torch.Tensor], crop: int, g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(crop) + RandomHorizontalFlip on uint8 CHW tensors -> uint8 N x 3 x crop x crop.

    The crops are cut from the image stored at shorter side `resize`, not from the original file:
    the same crop geometry relative to the image, but small crops are upsampled from fewer pixels.
    """
    import torch

    return torch.stack([resized_crop(im, crop, u) for im, u in zip(images, draws(len(images), g))])


MAX_PADDING = 2.0  # batched: the padded canvas may take at most this many times the images' own bytes


class Crops:
    """The train images (uint8 CHW, any sizes, on the device) and the recipe's augmentation of a
    batch of them, `batched` or per image (see the module docstring)."""

    def __init__(self, images: list[torch.Tensor], crop: int, batched: bool):
        self.images, self.crop, self.sizes = images, crop, [tuple(im.shape[1:]) for im in images]
        self.canvas = pack(images) if batched else None
        self.batched = self.canvas is not None

    def __call__(self, idx: list[int], g: torch.Generator) -> torch.Tensor:
        """N x 3 x crop x crop: uint8 per image, float (0-255) batched."""
        if not self.batched:
            return augment([self.images[i] for i in idx], self.crop, g)
        import torch
        from torchvision.ops import roi_align

        u = draws(len(idx), g)
        rows = []  # per crop: box (batch index, x1, y1, x2, y2), flip, image index; exact in float32
        for k, (i, ui) in enumerate(zip(idx, u)):
            y, x, h, w = crop_params(*self.sizes[i], ui)
            rows.append([k, x, y, x + w, y + h, flipped(ui), i])
        meta = torch.tensor(rows, dtype=torch.float32)
        dev = self.canvas.device
        if dev.type == "cuda":  # one pinned, asynchronous copy: no host sync in the step loop
            meta = meta.pin_memory().to(dev, non_blocking=True)
        src = self.canvas[meta[:, 6].long()].float()
        # aligned=True: box [x, x + w) covers exactly pixels x .. x + w - 1; sampling_ratio=-1:
        # ceil(box / crop) samples per output pixel and axis, averaged (antialiasing when shrinking)
        out = roi_align(src, meta[:, :5], (self.crop, self.crop), spatial_scale=1.0, sampling_ratio=-1,
                        aligned=True)
        return torch.where(meta[:, 5].bool().view(-1, 1, 1, 1), out.flip(-1), out)


def pack(images: list[torch.Tensor]) -> torch.Tensor | None:
    """The images in one N x 3 x H x W uint8 canvas (each at the top left, its edges repeated into
    the padding so resampling at a border reads the border, as a clamped resize does); None when
    the canvas would take more than MAX_PADDING times the images' bytes (very mixed shapes)."""
    import torch
    import torch.nn.functional as F

    if not images:
        return None
    h, w = max(im.shape[1] for im in images), max(im.shape[2] for im in images)
    if len(images) * 3 * h * w > MAX_PADDING * sum(im.numel() for im in images):
        return None
    canvas = torch.empty(len(images), 3, h, w, dtype=torch.uint8, device=images[0].device)
    for k, im in enumerate(images):
        pad = (0, w - im.shape[2], 0, h - im.shape[1])
        canvas[k] = F.pad(im[None].float(), pad, mode="replicate")[0].to(torch.uint8) if any(pad) else im
    return canvas
