"""Image files as tensors: the one image Dataset (PIL decode + eval transform, a bad file a
recorded reason), and the fine-tuning fast path's decode-once (uint8 tensors kept in memory).
Shared by features, finetune, predict and bench."""
from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torchvision.transforms import v2
from tqdm import tqdm

from .. import UserError
from ..images.decode import BadImage, load_rgb
from ..images.scan import ImageFolderScan, ImageRecord
from ..images.transforms import Preprocess, eval_transform


class ImageFiles(torch.utils.data.Dataset):
    """One image file per item, decoded by PIL (`draft`: see data.load_rgb) and transformed.

    Items are (tensor, reason): reason is "" or why the file is unusable, and then the tensor is
    `blank`, so one bad file never stops a run. With `labels=True` items are (tensor, label), as
    torchvision's ImageFolder gives them, and a bad file raises (the list was checked before).
    """

    def __init__(self, root: Path | str, records: list[ImageRecord], transform: Callable, draft: int | None = None,
                 blank: torch.Tensor | None = None, labels: bool = False):
        self.root, self.records, self.transform, self.draft = Path(root), records, transform, draft
        self.blank = torch.empty(0, dtype=torch.uint8) if blank is None else blank
        self.labels = labels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        if self.labels:
            return self.transform(load_rgb(self.root / r.path, self.draft)), r.label
        try:
            return self.transform(load_rgb(self.root / r.path, self.draft)), ""
        except BadImage as e:
            return self.blank, str(e)


def eval_images(root: Path | str, records: list[ImageRecord], pre: Preprocess = Preprocess(),
                fast_decode: bool = True) -> ImageFiles:
    """The eval view of each file (uint8, crop x crop), a blank one for a bad file."""
    return ImageFiles(root, records, eval_transform(pre.resize, pre.crop, pre.interpolation),
                      pre.resize if fast_decode else None, blank=torch.zeros(3, pre.crop, pre.crop, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# Decode once (airbench style): every file decoded a single time, bad ones skipped and recorded.

@dataclass
class Decoded:
    dataset: str
    classes: list[str]
    train: list[ImageRecord]  # usable files only
    val: list[ImageRecord]
    skipped: dict[str, list[tuple[str, str]]]  # split -> (relative path, reason)
    train_images: list[torch.Tensor] | None = None  # kept: uint8 CHW, shorter side = resize
    val_images: torch.Tensor | None = None  # kept: uint8 N x 3 x crop x crop
    seconds: float = 0.0
    root: Path | None = None  # the folder the records' paths are relative to


def _decoded_only(im) -> torch.Tensor:
    return torch.empty(0, dtype=torch.uint8)


def _shorter_side(resize: int, interpolation: str, im) -> torch.Tensor:
    mode = v2.InterpolationMode(interpolation)
    return v2.functional.pil_to_tensor(v2.functional.resize(im, [resize], interpolation=mode, antialias=True))


def _one_time_decode(keep: bool, val: bool, pre: Preprocess) -> tuple[Callable, int | None]:
    """(transform, JPEG draft): the whole image at shorter side `resize` for train, the eval crop
    for val; when nothing is kept (the reference loop) a file is only checked to decode fully.
    Module-level functions, not lambdas: DataLoader workers started by spawn must pickle them."""
    if not keep:
        return _decoded_only, None
    if val:
        return eval_transform(pre.resize, pre.crop, pre.interpolation), pre.resize
    return functools.partial(_shorter_side, pre.resize, pre.interpolation), pre.resize


def decode_once(root: Path, s: ImageFolderScan, splits: tuple[str, str], *, keep: bool, pre: Preprocess,
                workers: int, device: torch.device) -> Decoded:
    """Decode every scanned file of the (train, val) splits once in `workers` processes, skipping
    and recording bad ones; with `keep` the uint8 tensors stay on `device`."""
    tr, va = splits
    t0 = time.perf_counter()
    kept, images, skipped = {}, {}, {n: list(sp.skipped) for n, sp in s.splits.items()}
    for split in (tr, va):
        recs = s.splits[split].items
        ds = ImageFiles(root, recs, *_one_time_decode(keep, split == va, pre))
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        kept[split], images[split] = [], []
        for r, (x, why) in zip(recs, tqdm(loader, desc=f"decode {split}", file=sys.stderr, disable=None, leave=False)):
            if why:
                skipped[split].append((r.path, why))
                print(f"  skipped {r.path}: {why}")
            else:
                kept[split].append(r)
                images[split].append(x.to(device) if keep else None)
        if not kept[split]:
            raise UserError(f"split {split!r} has no decodable images")
    data = Decoded(s.name, s.classes, kept[tr], kept[va], skipped, root=Path(root))
    if keep:
        data.train_images, data.val_images = images[tr], torch.stack(images[va])
    data.seconds = time.perf_counter() - t0
    return data
