"""Scan ImageFolder trees (DATA/<split>/<class>/<file>) into image records, skipping and recording
what is not a usable image; manifests (manifest.py) and automatic splits (splits.py) give the same
records.
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import UserError
from .records import IMG_EXTENSIONS, ImageFolderScan, ImageRecord, Split, _unusable, carve_val, split_automatically


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def scan(root: Path | str, splits: tuple[str, ...] = ("train", "val"),
         fractions: tuple[float, float, float] | None = None) -> ImageFolderScan:
    """List every image under root/<split>/<class>/, sorted; skip and record non-images. With
    splits ("auto",): the split folders shapes.py finds (train and val, and test when present; a
    val carved from train beside a test/), or for a plain root/<class>/ folder (or a train/ alone)
    an automatic split by `fractions` (splits.py).

    Raises UserError for a missing root or split, an empty class folder, or class sets that
    differ between splits.
    """
    from .shapes import folder_layout
    from .splits import FRACTIONS

    root, splits = Path(root), check_split_names(tuple(splits))
    if root.suffix.lower() == ".csv" and root.is_file():
        from .manifest import scan_manifest

        return scan_manifest(root, splits, fractions)
    if not root.is_dir():
        raise UserError(
            f"data directory {str(root)!r} does not exist (set DATA=/path/to/imagefolder or run `make data`)"
        )
    layout = folder_layout(root, splits)
    for folder, why in layout.ignored:
        print(f"{str(root)!r}: {folder}/ ignored: {why}")
    if layout.automatic:
        return _auto_split(root, layout.base, fractions or FRACTIONS)
    classes, out = (_scan_listed if layout.listed else _scan_folders)(root, layout.folders)
    if layout.carve:
        return carve_val(ImageFolderScan(root, classes, out), fractions or FRACTIONS)
    return ImageFolderScan(root, classes, out)


def _scan_folders(root: Path, folders: dict[str, str]) -> tuple[list[str], dict[str, Split]]:
    """(classes, a Split per name) of split folders of class folders; their class sets must agree."""
    classes: list[str] | None = None
    out: dict[str, Split] = {}
    seen: dict[str, str] = {}  # real path -> the relative path it was first listed under
    for name, folder in folders.items():
        found, out[name] = _scan_split(root, root / folder, name, seen, classes)
        if classes is None:
            classes = found
        elif found != classes:
            diff = sorted(set(found) ^ set(classes))
            raise UserError(
                f"class folders differ between splits: {name!r} has {found}, {next(iter(out))!r} has {classes} "
                f"(differing: {diff})"
            )
    assert classes is not None
    return classes, out


def _scan_listed(root: Path, folders: dict[str, str]) -> tuple[list[str], dict[str, Split]]:
    """(classes, a Split per name) of split folders labelled by Roboflow's _classes.csv
    (roboflow.py), each listed file checked as a folder's are; the classes must agree."""
    from .roboflow import LABELS, read_classes_csv

    classes: list[str] | None = None
    out: dict[str, Split] = {}
    seen: dict[str, str] = {}
    for name, folder in folders.items():
        found, rows = read_classes_csv(root / folder / LABELS)
        if classes is not None and found != classes:
            raise UserError(f"the classes of {folder}/{LABELS} ({found}) differ from {next(iter(folders.values()))}/"
                            f"{LABELS}'s ({classes})")
        classes, split = found, out.setdefault(name, Split(name, []))
        for rel, label in ((f"{folder}/{fn}", y) for fn, y in rows):
            why = _unusable(root / rel, seen)
            if why:
                split.skipped.append((rel, why))
            else:
                st, seen[os.path.realpath(root / rel)] = (root / rel).stat(), rel
                split.items.append(ImageRecord(rel, label, st.st_size, st.st_mtime_ns))
        if not split.items:
            raise UserError(f"{folder}/{LABELS} lists no usable image in {str(root / folder)!r}")
    assert classes is not None
    return classes, out


def _scan_split(root: Path, sdir: Path, name: str, seen: dict[str, str], classes: list[str] | None = None):
    """(class folders found, the Split of their images) of one split folder (or of root itself)."""
    if not sdir.is_dir():
        raise UserError(f"split {name!r} is missing: expected a folder {str(sdir)!r} with one sub-folder per class")
    found = sorted(d.name for d in sdir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise UserError(f"split {name!r} has no class folders under {str(sdir)!r}")
    split = Split(name, [], [(_rel(d, root), "hidden folder: not a class, ignored") for d in sorted(sdir.iterdir())
                             if d.is_dir() and d.name.startswith(".")])
    for label, cls in enumerate(classes if classes is not None and found == classes else found):
        n_before = len(split.items)
        _scan_class(root, sdir / cls, label, split, seen)
        if len(split.items) == n_before:
            raise UserError(f"class folder {str(sdir / cls)!r} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return found, split


def _auto_split(root: Path, base: str, fractions: tuple[float, float, float]) -> ImageFolderScan:
    """A plain root/<class>/<image> folder (or root/train/<class>/ alone) split into train, val and test."""
    classes, everything = _scan_split(root, root / base, base or "all", {})
    return split_automatically(root, classes, everything, fractions)


def check_split_names(splits: tuple[str, ...]) -> tuple[str, ...]:
    """UserError unless every split is a plain folder name (a path would lead out of the data root)."""
    for name in splits:
        if name in ("", ".", "..") or any(c in name for c in "/\\") or not name.isprintable():
            raise UserError(f"--splits takes folder names under the data root: {name!r} is not a plain folder "
                            "name (no '/', '\\', '.' or '..')")
    return splits


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


def check_classes(labels, classes: list[str], what: str, least: int = 1) -> None:
    """Every class needs usable training images (`least`: 2 for cross-validation), and there must be
    two classes at least: a head trained on a subset would silently give its classes' positions to
    others."""
    import numpy as np

    if len(classes) < 2:
        raise UserError(f"{what}: only one class ({classes[0] if classes else 'none'}); classifying needs two or more")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise UserError(f"{what}: class {', '.join(map(repr, empty))} has no usable training images (every file was "
                        "skipped as unreadable); fix or remove the class folder")
    single = [c for c, n in zip(classes, counts) if n == 1]
    if least > 1 and single:
        raise UserError(f"{what}: class {', '.join(map(repr, single))} has a single training image: "
                        "cross-validation needs at least 2 per class; add images or remove the class folder")


