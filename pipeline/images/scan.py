"""Scan ImageFolder trees (DATA/<split>/<class>/<file>), decode images safely, fetch hymenoptera.

Usage: `python -m pipeline data --data DIR` downloads and verifies the hymenoptera archive when DIR
is absent, then checks the tree.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import UserError


# torchvision.datasets.folder.IMG_EXTENSIONS, copied: importing torchvision costs seconds, and
# classify (which scans to check a cache is fresh) must not pay for it
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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


def check_classes(labels, classes: list[str], what: str) -> None:
    """Every class needs usable training images, and there must be two classes at least: a head
    trained on a subset would silently give its classes' positions to others."""
    import numpy as np

    if len(classes) < 2:
        raise UserError(f"{what}: only one class ({classes[0] if classes else 'none'}); classifying needs two or more")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise UserError(f"{what}: class {', '.join(map(repr, empty))} has no usable training images (every file was "
                        "skipped as unreadable); fix or remove the class folder")


