"""Decode one image file safely, as a person sees it: every mode as RGB (16-bit scaled, not clipped),
a phone's rotated photo turned upright by its EXIF orientation (phones store the sensor's pixels and
a tag saying how to turn them; a viewer turns them, a plain decode does not), an embedded colour
profile (a phone's Display P3, a camera's Adobe RGB) converted to sRGB, which the backbone's
training images were in; a bad file a BadImage with the reason, never a crash.
"""
from __future__ import annotations

from pathlib import Path


class BadImage(Exception):
    """A file that cannot be used as an image; the message is the recorded reason."""


def _to_8bit(im):
    """16-bit grayscale (PNG, TIFF: modes I;16 and I) scaled to 8 bits. Pillow's own convert("RGB")
    clips such values at 255, which turns nearly every pixel white."""
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    import numpy as np
    from PIL import Image

    a = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16") or a.max() > 255:
        a = a / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _to_srgb(im):
    """`im` in sRGB when it carries another colour profile (littlecms through Pillow's ImageCms); as it
    is when it has none, has sRGB's, or the profile cannot be read (then the pixels are taken as sRGB,
    as every viewer without colour management does)."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return im
    import io

    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(src).lower().replace(" ", ""):
            return im
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (OSError, ValueError, ImageCms.PyCMSError):
        return im


def check_regular(path: Path | str) -> None:
    """BadImage unless path is a regular file: opening a named pipe (mkfifo x.jpg) would wait for
    ever for a writer, and a device never ends."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise BadImage(f"unreadable: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise BadImage("not a regular file (a named pipe, device or folder): skipped")


def load_rgb(path: Path | str, draft: int | None = None):
    """Decode an image fully and return it as RGB (grayscale, 16-bit, palette, RGBA, CMYK converted).

    `draft` lets the JPEG decoder downscale by 1/2..1/8 while decoding, never below `draft` pixels
    on either side: a large JPEG then decodes several times faster for the same Resize(256) result
    up to resampling detail. Truncated or undecodable files raise BadImage with the reason.
    """
    from PIL import Image, ImageOps

    check_regular(path)
    try:
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()  # force a full decode: truncation shows up here, not later
            return _to_srgb(ImageOps.exif_transpose(_to_8bit(im))).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        msg = str(e).replace(str(path), "").strip(" :'\"") or type(e).__name__
        raise BadImage(f"undecodable: {msg}") from None
