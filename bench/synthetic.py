"""Synthetic image folders for the sections that need more images than DATA has. Synthetic codes
are written by pipeline.codes.synthetic, the writer the tests use too."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

NOISE = 24  # sd of the pixel noise on the smooth colour field
QUALITY = 90  # JPEG quality: with NOISE, ~110 KB at 500x375, like an ImageNet photo


def noise_jpeg(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """A smooth random colour field plus pixel noise: compresses like a photo (~110 KB at 500x375)."""
    w, h = size
    base = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    px = np.asarray(base, dtype=np.float32) + rng.normal(0, NOISE, (h, w, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def make_image_folder(root: Path, n: int, size: tuple[int, int], splits=(("train", 0.8), ("val", 0.2)),
                      unique: int = 500, seed: int = 0) -> Path:
    """n JPEGs in root/<split>/<class a|b>/; `unique` distinct images are encoded and the rest are
    byte copies (decoding costs the same, and generating stays cheap)."""
    rng = np.random.default_rng(seed)
    pool = [noise_jpeg(rng, size) for _ in range(min(unique, n))]
    i = 0
    for split, share in splits:
        k = round(n * share) if split != splits[-1][0] else n - i
        for j in range(k):
            d = root / split / ("a" if j % 2 else "b")
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:06d}.jpg").write_bytes(pool[i % len(pool)])
            i += 1
    return root


def warm_file_cache(root: Path) -> None:
    """Read every file once so whichever method runs first does not pay for cold disk reads."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            p.read_bytes()
