"""Batched decode for extraction: JPEG bytes decoded many at a time by torchvision.io.decode_jpeg on
the extraction device (nvJPEG on CUDA, libjpeg-turbo on CPU), then resized (antialiased), centre
cropped there, from uint8; files are read by a thread pool one batch ahead, so reading overlaps
decoding and the backbone.

Anything decode_jpeg does not take (PNG, GIF, a JPEG it rejects, a truncated file) falls back, per
image, to the PIL path (data.load_rgb + the eval transform), so bad files are skipped with the
reason the PIL path gives. EXIF orientation is applied, as in the PIL path; a JPEG with a colour
profile goes through PIL, which converts it to sRGB. decode_jpeg is
deprecated since torchvision 0.29 in favour of TorchCodec; it is the decoder pinned here.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2

from ..images.decode import BadImage, load_rgb
from ..images.scan import ImageRecord
from ..images.transforms import Preprocess
from ..images.transforms import eval_transform

JPEG_MAGIC = b"\xff\xd8\xff"
# RuntimeErrors that are not about the file (decode_jpeg raises RuntimeError for a bad JPEG too)
DEVICE_ERRORS = tuple(e for e in (torch.OutOfMemoryError, getattr(torch, "AcceleratorError", None)) if e)


def decoder_name(device_type: str) -> str:
    """How the fingerprint names this decoder: codes decoded differently never mix in one cache."""
    return f"torchvision decode_jpeg on {device_type} ({'nvJPEG' if device_type == 'cuda' else 'libjpeg-turbo'}), " \
           "PIL for the rest"


def _read(path: Path) -> bytes | None:
    import stat

    try:
        return path.read_bytes() if stat.S_ISREG(path.stat().st_mode) else None  # a pipe would wait for ever
    except OSError:
        return None


def _resize_crop(img: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    mode = v2.InterpolationMode(pre.interpolation)
    x = v2.functional.resize(img, [pre.resize], interpolation=mode, antialias=True)
    return v2.functional.center_crop(x, [pre.crop, pre.crop])


def _pil(path: Path, pre: Preprocess, device: torch.device, fast_decode: bool) -> tuple[torch.Tensor, str]:
    """The PIL path for one file: its eval crop, or a blank one and the reason it failed."""
    try:
        img = load_rgb(path, pre.resize if fast_decode else None)
    except BadImage as e:
        return torch.zeros(3, pre.crop, pre.crop, dtype=torch.uint8, device=device), str(e)
    return eval_transform(pre.resize, pre.crop, pre.interpolation)(img).to(device), ""


def _decode_jpegs(files, jpeg: list[int], device: torch.device) -> dict[int, torch.Tensor]:
    """{index: decoded RGB uint8 CHW} of the JPEGs decode_jpeg takes; one call for the batch, then
    one per image when the batch call fails (a single bad file fails it all)."""
    if not jpeg:
        return {}
    raw = [torch.frombuffer(bytearray(files[i][1]), dtype=torch.uint8) for i in jpeg]
    try:
        return dict(zip(jpeg, decode_jpeg(raw, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)))
    except DEVICE_ERRORS:
        raise  # out of memory or a broken device is not a bad file: say so, do not fall back silently
    except RuntimeError:
        decoded = {}
        for i, r in zip(jpeg, raw):
            try:
                decoded[i] = decode_jpeg(r, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
            except DEVICE_ERRORS:
                raise
            except RuntimeError:
                pass
        return decoded


def decode_batch(files: list[tuple[Path, bytes | None]], pre: Preprocess, device: torch.device | str,
                 fast_decode: bool = True) -> tuple[torch.Tensor, list[str], list[str]]:
    """(uint8 N x 3 x crop x crop on `device`, reasons ("" = usable), how each was decoded:
    "batched" or "pil"). JPEGs are decoded in one call; a batch the decoder rejects is retried
    image by image, and whatever it still rejects goes through PIL."""
    device = torch.device(device)
    out: list[torch.Tensor | None] = [None] * len(files)
    how, reasons = ["pil"] * len(files), [""] * len(files)
    # a JPEG with a colour profile goes through PIL, which converts it to sRGB; decode_jpeg would not
    jpeg = [i for i, (_, data) in enumerate(files)
            if data is not None and data[:3] == JPEG_MAGIC and b"ICC_PROFILE" not in data[:1 << 16]]
    decoded: dict[int, torch.Tensor] = {}
    with warnings.catch_warnings():  # torchvision 0.29 warns on every call that TorchCodec supersedes it
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = _decode_jpegs(files, jpeg, device)
    for i, (path, _) in enumerate(files):
        if i in decoded and decoded[i].shape[0] == 3 and min(decoded[i].shape[1:]) > 0:
            out[i], how[i] = _resize_crop(decoded[i], pre), "batched"
        else:
            out[i], reasons[i] = _pil(path, pre, device, fast_decode)
    return torch.stack(out), reasons, how


def batches(root: Path | str, records: list[ImageRecord], batches: list[list[int]], pre: Preprocess,
            device: torch.device, fast_decode: bool = True, threads: int = 8) -> Iterator[tuple[torch.Tensor, list]]:
    """(images on the device, reasons) per batch of record indices, as the PIL DataLoader yields
    them; batch i + 1 is read from disk while batch i is decoded."""
    root = Path(root)
    with ThreadPoolExecutor(threads) as pool:
        def read(batch):
            paths = [root / records[i].path for i in batch]
            return paths, pool.map(_read, paths)
        ahead = read(batches[0]) if batches else None
        for k in range(len(batches)):
            paths, data = ahead
            files = list(zip(paths, data))
            ahead = read(batches[k + 1]) if k + 1 < len(batches) else None
            x, reasons, _ = decode_batch(files, pre, device, fast_decode)
            yield x, reasons
