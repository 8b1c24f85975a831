"""Extra views of each image for the cache: augmented views of train images, test-time views of val.

Train (`features --views K`): view j of an image is the recipe's RandomResizedCrop + horizontal
flip (augment.resized_crop), drawn from a generator seeded by (seed, the image's path, j), cut from
the image at shorter side `resize`, as the fast frozen fine-tune cuts its crops. A view depends on
nothing else, so the first 5 of 25 views are the 5 views of `--views 5`, and adding views to a
file computes only the new ones.

Val (`features --tta T`): T deterministic views; the first is the plain centre crop (the file's
codes), the others are TTA_VIEWS in order: the four corner crops (T = 5 is torchvision's FiveCrop),
then the five flipped (T = 10 is TenCrop), then a larger-scale centre (shorter side resized to the
crop size) and its flip. Only the extra views are stored: N x V x D beside the N x D codes.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ..images.augment import describe, resized_crop
from ..images.decode import BadImage, load_rgb
from ..images.transforms import Preprocess

TTA_VIEWS = ("top-left", "top-right", "bottom-left", "bottom-right", "centre flipped", "top-left flipped",
             "top-right flipped", "bottom-left flipped", "bottom-right flipped", "larger-scale centre",
             "larger-scale centre flipped")
MAX_TTA = len(TTA_VIEWS) + 1


def spec(kind: str, pre: Preprocess, seed: int) -> dict:
    """What determines a split's views, besides the codes' own inputs (recorded and fingerprinted)."""
    if kind == "augment":
        return {"kind": kind, "recipe": describe(pre.crop), "from": f"image at shorter side {pre.resize}",
                "seed": seed, "per_view_seed": "numpy default_rng([seed, crc32(path), view])"}
    return {"kind": kind, "views": ["centre (the codes)", *TTA_VIEWS], "from": f"image at shorter side {pre.resize}",
            "crop": pre.crop}


def view_uniforms(seed: int, path: str, j: int) -> list[float]:
    """The 23 uniforms that decide augmented view j of `path` (22 for the crop, 1 for the flip)."""
    return np.random.default_rng([seed, zlib.crc32(path.encode()), j]).random(23).tolist()


def tta_view(img, base, pre: Preprocess, j: int):
    """Extra test-time view j (an index into TTA_VIEWS) of a PIL image / its uint8 CHW resize."""
    from torchvision.transforms import v2

    name = TTA_VIEWS[j]
    c, (h, w) = pre.crop, base.shape[1:]
    if name.startswith("larger-scale"):
        mode = v2.InterpolationMode(pre.interpolation)
        x = v2.functional.pil_to_tensor(v2.functional.center_crop(
            v2.functional.resize(img, [c], interpolation=mode, antialias=True), [c, c]))
    else:
        top, left = {"top-left": (0, 0), "top-right": (0, w - c), "bottom-left": (h - c, 0),
                     "bottom-right": (h - c, w - c), "centre": ((h - c) // 2, (w - c) // 2)}[name.split()[0]]
        x = base[:, top:top + c, left:left + c]
    return x.flip(-1) if name.endswith("flipped") else x


class ViewImages:
    """A map-style Dataset: item i is (V x 3 x crop x crop uint8 views of image i, "" or why it
    failed). Each file is decoded once for all its views."""

    def __init__(self, root: Path | str, paths: list[str], pre: Preprocess, fast_decode: bool, kind: str,
                 views: list[int], seed: int):
        self.root, self.paths, self.pre, self.fast_decode = Path(root), paths, pre, fast_decode
        self.kind, self.views, self.seed = kind, views, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch
        from torchvision.transforms import v2

        p, pre = self.paths[i], self.pre
        blank = torch.zeros(len(self.views), 3, pre.crop, pre.crop, dtype=torch.uint8)
        try:
            img = load_rgb(self.root / p, pre.resize if self.fast_decode else None)
        except BadImage as e:
            return blank, str(e)
        mode = v2.InterpolationMode(pre.interpolation)
        base = v2.functional.pil_to_tensor(v2.functional.resize(img, [pre.resize], interpolation=mode, antialias=True))
        if self.kind == "augment":
            out = [resized_crop(base, pre.crop, view_uniforms(self.seed, p, j)) for j in self.views]
        else:
            out = [tta_view(img, base, pre, j) for j in self.views]
        return torch.stack(out), ""
