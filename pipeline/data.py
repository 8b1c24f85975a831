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
    root: Path  # image paths are relative to it (a manifest's folder; absolute paths in a manifest stay so)
    classes: list[str]
    splits: dict[str, Split]
    manifest: str = ""  # the CSV manifest's name, when the images were listed by one

    @property
    def name(self) -> str:
        return Path(self.manifest).stem if self.manifest else self.root.resolve().name

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
    if root.suffix.lower() == ".csv" and root.is_file():
        return scan_manifest(root, splits)
    if not root.is_dir():
        raise UserError(
            f"data directory {str(root)!r} does not exist (set DATA=/path/to/imagefolder or run `make data`)"
        )
    classes: list[str] | None = None
    out: dict[str, Split] = {}
    seen: dict[str, str] = {}  # real path -> the relative path it was first listed under
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
            _scan_class(root, sdir / cls, label, split, seen)
            if len(split.items) == n_before:
                raise UserError(f"class folder {str(sdir / cls)!r} holds no images ({', '.join(IMG_EXTENSIONS)})")
        out[name] = split
    assert classes is not None
    return ImageFolderScan(root, classes, out)


MANIFEST_COLUMNS = ("path", "label", "split")


def scan_manifest(manifest: Path, splits: tuple[str, ...] = ("train", "val")) -> ImageFolderScan:
    """The images a CSV manifest lists (columns path, label, split; paths relative to the manifest's
    folder or absolute), in the manifest's order, with the same checks and skip reasons as a
    folder scan. Classes are the labels, sorted, as ImageFolder sorts its class folders; every
    class needs images in the first split."""
    import csv

    root = manifest.parent
    with open(manifest, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"manifest {str(manifest)!r} lacks the column{'s' * (len(missing) > 1)} "
                            f"{', '.join(missing)} (it needs a header line: path,label,split)")
        rows = [(r["path"].strip(), r["label"].strip(), r["split"].strip()) for r in reader]
    classes = sorted({label for p, label, split in rows if split in splits and p and label})
    if not classes:
        raise UserError(f"manifest {str(manifest)!r} lists no image of the splits {', '.join(splits)}")
    index, out, seen = {c: i for i, c in enumerate(classes)}, {n: Split(n, []) for n in splits}, {}
    for p, label, name in rows:
        if name not in out:
            continue
        split = out[name]
        if not p or not label:
            split.skipped.append((p or "(empty path)", "manifest row without a path or label"))
            continue
        f = Path(p) if Path(p).is_absolute() else root / p
        why = _unusable(f, seen)
        if why:
            split.skipped.append((p, why))
        else:
            st = f.stat()
            seen[os.path.realpath(f)] = p
            split.items.append(ImageRecord(p, index[label], st.st_size, st.st_mtime_ns))
    for name, split in out.items():
        if not split.items:
            raise UserError(f"manifest {str(manifest)!r} lists no usable image for split {name!r}")
    lacking = sorted(set(classes) - {classes[r.label] for r in out[splits[0]].items})
    if lacking:
        raise UserError(f"manifest {str(manifest)!r}: class {', '.join(map(repr, lacking))} has no usable "
                        f"{splits[0]!r} image")
    return ImageFolderScan(root, classes, out, manifest=manifest.name)


def _unusable(f: Path, seen: dict[str, str]) -> str:
    """Why a listed file cannot be used, or ''."""
    if not f.name.lower().endswith(IMG_EXTENSIONS):
        return f"not an image type ({f.suffix or 'no extension'})"
    try:
        st = f.stat()
    except OSError as e:
        return f"unreadable: {e.strerror}"
    real = os.path.realpath(f)
    if real in seen:
        return f"duplicate: the same file as {seen[real]}"
    return "empty file (0 bytes)" if st.st_size == 0 else ""


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
                "decode": f"PIL draft>={self.resize}" if fast_decode else "PIL full"}

    @classmethod
    def from_spec(cls, spec: dict) -> Preprocess:
        """Back from a recorded spec (model.json); older records hold resize and crop only."""
        return cls(spec["resize"], spec["crop"], spec.get("interpolation", "bilinear"),
                   tuple(spec.get("mean", IMAGENET_MEAN)), tuple(spec.get("std", IMAGENET_STD)), "recorded")

    def describe(self) -> str:
        return f"resize {self.resize}, crop {self.crop}, {self.interpolation} ({self.source})"


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def _walk(root: Path, cdir: Path, split: Split):
    """Files under a class folder, sorted. Folder links are followed, except one that leads back into
    the data tree outside this class folder: it would loop (up -> ..) or give images another class's
    label; it is recorded as skipped. A folder reached twice is walked once."""
    real_root, real_cls, visited = os.path.realpath(root), os.path.realpath(cdir), set()
    for dirpath, dirnames, filenames in os.walk(cdir, followlinks=True):
        here = os.path.realpath(dirpath)
        if here in visited:
            dirnames[:] = []
            continue
        visited.add(here)
        keep = []
        for d in sorted(dirnames):
            target = os.path.realpath(os.path.join(dirpath, d))
            if _inside(target, real_root) and not _inside(target, real_cls):
                why = "folder link back into the data tree: not followed"
                split.skipped.append((_rel(Path(dirpath) / d, root), why))
            elif target not in visited:
                keep.append(d)
        dirnames[:] = keep
        yield from (Path(dirpath) / fn for fn in sorted(filenames) if not fn.startswith("."))


def _scan_class(root: Path, cdir: Path, label: int, split: Split, seen: dict[str, str]) -> None:
    """Append the class folder's usable images to `split`, its unusable files to `split.skipped`.
    Each real file is listed once in the whole scan, under its first path in sorted order; a link
    to a file elsewhere in the data tree (another class, another split) is not followed."""
    real_root, real_cls = os.path.realpath(root), os.path.realpath(cdir)
    for p in _walk(root, cdir, split):
        rel, real = _rel(p, root), os.path.realpath(p)
        if not p.name.lower().endswith(IMG_EXTENSIONS):
            split.skipped.append((rel, f"not an image type ({p.suffix or 'no extension'})"))
            continue
        try:
            st = p.stat()
        except OSError as e:  # a dangling link or unreadable entry
            split.skipped.append((rel, f"unreadable: {e.strerror}"))
            continue
        if _inside(real, real_root) and not _inside(real, real_cls):
            split.skipped.append((rel, "link to a file in another folder of the data tree: not followed"))
        elif real in seen:
            split.skipped.append((rel, f"duplicate: the same file as {seen[real]}"))
        elif st.st_size == 0:
            split.skipped.append((rel, "empty file (0 bytes)"))
        else:
            seen[real] = rel
            split.items.append(ImageRecord(rel, label, st.st_size, st.st_mtime_ns))


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
