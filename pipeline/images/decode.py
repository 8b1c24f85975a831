"""Decode one image file safely: every mode as RGB (16-bit scaled, not clipped), a bad file a
BadImage with the reason, never a crash.
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


def load_rgb(path: Path | str, draft: int | None = None):
    """Decode an image fully and return it as RGB (grayscale, 16-bit, palette, RGBA, CMYK converted).

    `draft` lets the JPEG decoder downscale by 1/2..1/8 while decoding, never below `draft` pixels
    on either side: a large JPEG then decodes several times faster for the same Resize(256) result
    up to resampling detail. Truncated or undecodable files raise BadImage with the reason.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (draft, draft))
            im.load()  # force a full decode: truncation shows up here, not later
            return _to_8bit(im).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        msg = str(e).replace(str(path), "").strip(" :'\"") or type(e).__name__
        raise BadImage(f"undecodable: {msg}") from None
