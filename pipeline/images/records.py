"""What a scan gives: image records, splits and the scan itself (a folder's, scan.py, or a CSV
manifest's, manifest.py, alike), the one rule for a file that cannot be used, and the automatic
split of one list into train, val and test (splits.py) that both share.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
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
    rule: str = ""  # how the splits were made when made here, not by folders: splits.rule_of

    @property
    def name(self) -> str:
        return Path(self.manifest).stem if self.manifest else self.root.resolve().name

    def split_note(self) -> str:
        """How a scan split here (no split folders, or a manifest without a split column) was split,
        in one line for the stages to print; "" for splits given by folders or a manifest."""
        from .splits import CARVE, describe

        where = "" if self.rule.startswith(CARVE) else "no split column: " if self.manifest else "no split folders: "
        return f"{self.name}: {where}{describe(self.rule)}" if self.rule else ""

    def digest(self) -> str:
        """Fingerprint of the image list: every file's split, relative path, label, size, mtime."""
        h = hashlib.sha256()
        h.update(("\n".join(self.classes) + "\n\n").encode())
        if self.rule:
            h.update(f"{self.rule}\n".encode())
        for split in self.splits.values():
            for r in split.items:
                h.update(f"{split.name}\t{r.path}\t{r.label}\t{r.size}\t{r.mtime_ns}\n".encode())
        return h.hexdigest()


def carve_val(s: ImageFolderScan, fractions: tuple[float, float, float]) -> ImageFolderScan:
    """A train/ + test/ scan with val carved from train: each class's val share of its train images
    (splits.carve: by the seeded hash of its path), the rule recorded as for an automatic split."""
    from .splits import CARVE, carve, rule_of

    train, val = Split("train", [], s.splits["train"].skipped), Split("val", [])
    for label, name in enumerate(s.classes):
        recs = [r for r in s.splits["train"].items if r.label == label]
        if len(recs) < 2:
            raise UserError(f"class {name!r} has {len(recs)} usable train image{'s' * (len(recs) != 1)}: a val split "
                            "carved from train/ needs two at least (or add a val/ folder)")
        for r, to_val in zip(recs, carve([r.path for r in recs], fractions[1])):
            (val if to_val else train).items.append(r)
    splits = {"train": train, "val": val, **{n: sp for n, sp in s.splits.items() if n != "train"}}
    return replace(s, splits=splits, rule=rule_of(fractions, kind=CARVE))


def split_automatically(root: Path, classes: list[str], everything: Split, fractions: tuple[float, float, float],
                        manifest: str = "") -> ImageFolderScan:
    """Every image of one list (a plain folder of class folders, or a manifest without a split
    column) split into train, val and test class by class (splits.assign: stratified, each image
    placed by a hash of the seed and its path), the rule recorded in the scan and its digest."""
    from .splits import assign, rule_of

    out = {n: Split(n, []) for n in ("train", "val", "test")}
    for label in range(len(classes)):
        recs = [r for r in everything.items if r.label == label]
        for r, name in zip(recs, assign([r.path for r in recs], fractions)):
            out[name].items.append(r)
    out["train"].skipped = list(everything.skipped)  # files that are no image, whichever split they'd be in
    small = [c for i, c in enumerate(classes) if sum(r.label == i for r in everything.items) < 3]
    if small:
        raise UserError(f"class {', '.join(map(repr, small))} has fewer than 3 usable images: "
                        f"{'a manifest' if manifest else 'a folder'} split automatically needs one image of each "
                        "class in train, val and test")
    return ImageFolderScan(root, classes, out, manifest=manifest, rule=rule_of(fractions))


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
