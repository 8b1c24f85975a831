"""Scan ImageFolder trees (DATA/<split>/<class>/<file>), decode images safely, fetch hymenoptera.

Usage: `python -m pipeline data --data DIR` downloads and verifies the hymenoptera archive when DIR
is absent, then checks the tree.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import UserError
from .config import opt, parse_splits

HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
# sha256 over "relpath\0sha256(file)\n" lines of the extracted tree, in sorted walk order
# (see `tree_digest`): it pins all 398 files of the archive as distributed.
HYMENOPTERA_TREE_SHA256 = "09b2329aa6956906521686a682b4c4793592134e6d718c3e9769e005ec240417"


# torchvision.datasets.folder.IMG_EXTENSIONS, copied: importing torchvision costs seconds, and
# classify (which scans to check a cache is fresh) must not pay for it
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadImage(Exception):
    """A file that cannot be used as an image; the message is the recorded reason."""


@dataclass(frozen=True)
class ImageRecord:
    path: str  # relative to the data root, POSIX separators
    label: int
    size: int
    mtime_ns: int


@dataclass
class Split:
    name: str
    items: list[ImageRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


@dataclass
class ImageFolderScan:
    root: Path
    classes: list[str]
    splits: dict[str, Split]

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def digest(self) -> str:
        """Fingerprint of the image list: every file's split, relative path, label, size, mtime."""
        h = hashlib.sha256()
        h.update(("\n".join(self.classes) + "\n\n").encode())
        for split in self.splits.values():
            for r in split.items:
                h.update(f"{split.name}\t{r.path}\t{r.label}\t{r.size}\t{r.mtime_ns}\n".encode())
        return h.hexdigest()


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def scan(root: Path | str, splits: tuple[str, ...] = ("train", "val")) -> ImageFolderScan:
    """List every image under root/<split>/<class>/, sorted; skip and record non-images.

    Raises UserError for a missing root or split, an empty class folder, or class sets that
    differ between splits.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"data directory {str(root)!r} does not exist (set DATA=/path/to/imagefolder or run `make data`)"
        )
    classes: list[str] | None = None
    out: dict[str, Split] = {}
    for name in splits:
        sdir = root / name
        if not sdir.is_dir():
            raise UserError(f"split {name!r} is missing: expected a folder {str(sdir)!r} with one sub-folder per class")
        found = sorted(d.name for d in sdir.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not found:
            raise UserError(f"split {name!r} has no class folders under {str(sdir)!r}")
        if classes is None:
            classes = found
        elif found != classes:
            diff = sorted(set(found) ^ set(classes))
            raise UserError(
                f"class folders differ between splits: {name!r} has {found}, {splits[0]!r} has {classes} "
                f"(differing: {diff})"
            )
        split = Split(name, [])
        for label, cls in enumerate(classes):
            n_before = len(split.items)
            for dirpath, dirnames, filenames in os.walk(sdir / cls, followlinks=True):
                dirnames.sort()
                for fn in sorted(filenames):
                    if fn.startswith("."):
                        continue
                    p = Path(dirpath) / fn
                    rel = _rel(p, root)
                    if not fn.lower().endswith(IMG_EXTENSIONS):
                        split.skipped.append((rel, f"not an image type ({p.suffix or 'no extension'})"))
                        continue
                    try:
                        st = p.stat()
                    except OSError as e:  # a dangling link or unreadable entry
                        split.skipped.append((rel, f"unreadable: {e.strerror}"))
                        continue
                    if st.st_size == 0:
                        split.skipped.append((rel, "empty file (0 bytes)"))
                        continue
                    split.items.append(ImageRecord(rel, label, st.st_size, st.st_mtime_ns))
            if len(split.items) == n_before:
                raise UserError(f"class folder {str(sdir / cls)!r} holds no images ({', '.join(IMG_EXTENSIONS)})")
        out[name] = split
    assert classes is not None
    return ImageFolderScan(root, classes, out)


def transform_spec(resize: int, crop: int, fast_decode: bool) -> dict:
    """The eval transform in words, as the cache fingerprint records it (see encode.eval_transform)."""
    return {"resize": resize, "crop": crop, "interpolation": "bilinear", "antialias": True,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
            "decode": f"PIL draft>={resize}" if fast_decode else "PIL full"}


def load_rgb(path: Path | str, draft: int | None = None):
    """Decode an image fully and return it as RGB (grayscale, palette, RGBA, CMYK converted).

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
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        msg = str(e).replace(str(path), "").strip(" :'\"") or type(e).__name__
        raise BadImage(f"undecodable: {msg}") from None


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            h.update(_rel(p, root).encode() + b"\0" + hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def fetch_hymenoptera(dest: Path) -> Path:
    """Download the tutorial's archive, verify every file, and move it into place atomically."""
    from torchvision.datasets.utils import download_and_extract_archive

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        try:
            download_and_extract_archive(HYMENOPTERA_URL, download_root=tmp)
        except Exception as e:  # urllib/HTTP/SSL errors differ by platform; all mean "no download"
            raise UserError(
                f"could not download {HYMENOPTERA_URL} ({type(e).__name__}: {e}); with no network, "
                "point DATA at a local copy, e.g. `make demo DATA=/path/to/hymenoptera_data`"
            ) from None
        tree = Path(tmp) / "hymenoptera_data"
        got = tree_digest(tree)
        if got != HYMENOPTERA_TREE_SHA256:
            raise UserError(
                f"downloaded hymenoptera archive failed verification (tree sha256 {got[:12]}…, "
                f"expected {HYMENOPTERA_TREE_SHA256[:12]}…)"
            )
        shutil.move(str(tree), str(dest))
    return dest


@dataclass(frozen=True)
class Config:
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root; downloaded (hymenoptera) when absent")
    splits: str = opt("train,val", "comma-separated split folder names")


def describe(s: ImageFolderScan) -> str:
    parts = []
    for n, sp in s.splits.items():
        parts.append(f"{n}: {len(sp.items)} images" + (f" ({len(sp.skipped)} skipped)" if sp.skipped else ""))
    return f"{s.name}: classes {s.classes}; " + "; ".join(parts)


def run(cfg: Config) -> None:
    if not cfg.data.exists():
        print(f"{cfg.data} is absent: downloading {HYMENOPTERA_URL}")
        fetch_hymenoptera(cfg.data)
    s = scan(cfg.data, parse_splits(cfg.splits))
    print(describe(s))
    for sp in s.splits.values():
        for rel, why in sp.skipped:
            print(f"  skipped {rel}: {why}")
