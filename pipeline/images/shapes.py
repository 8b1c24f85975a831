"""The folder shapes people download, told apart before a scan (docs/reliability.md has the table).

With `--splits auto`, split folders are found by name, whatever their case and by the usual
aliases (Roboflow's `valid/`, `Training/` and `Testing/` of many Kaggle sets):

- train/ and val/ (and test/): scanned as given;
- train/ and test/ without val/ (most Kaggle sets): val is carved from train (scan.carve_val:
  stratified, seeded, recorded like the automatic split), test stays test;
- train/ alone, or a plain folder of class folders (torchvision's ImageFolder, TensorFlow's
  image_dataset_from_directory): split automatically into train, val and test (splits.py);
- Roboflow's CSV export (split folders of loose images, each labelled by its `_classes.csv`,
  roboflow.py): read as its CSVs say, with the same rules for a missing val.

Shapes whose labels are not in the folders are a one-line error with the fix: a split folder of
loose images (labels in file names, or an unlabelled Kaggle test/), a camera's or phone's export
(DCIM/100APPLE), val/ or test/ without train/, two folders for one split (val/ and valid/), and
split folders of which some hold class folders and some a `_classes.csv`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import UserError

AUTO = "auto"
# how datasets spell the usual splits (manifest values are matched the same way)
SPLIT_ALIASES = ({"train", "training"}, {"val", "valid", "validation", "dev"}, {"test", "testing", "holdout"})
CANONICAL = ("train", "val", "test")
# a camera's folders (Design rule for Camera File system: three digits, five characters)
_DCF = re.compile(r"^\d{3}[A-Za-z0-9_]{5}$")
_IMAGE = re.compile(r"\.(jpe?g|png|ppm|bmp|pgm|tiff?|webp|gif|heic)$", re.IGNORECASE)


@dataclass(frozen=True)
class Layout:
    folders: dict[str, str] = field(default_factory=dict)  # split name -> its folder under the root
    carve: bool = False  # train/ + test/: val carved from train
    listed: bool = False  # Roboflow's CSV export: each split folder's _classes.csv labels its images
    base: str = ""  # no split folders: the folder of class folders to split automatically ("" = the root)

    @property
    def automatic(self) -> bool:
        return not self.folders


def _dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(folder: Path) -> int:
    return sum(1 for f in folder.iterdir() if f.is_file() and _IMAGE.search(f.name))


def resolve(root: Path, name: str) -> str:
    """The folder of split `name` under root: itself, or its one alias present (valid/ for val)."""
    if (root / name).is_dir():
        return name
    group = next((g for g in SPLIT_ALIASES if name.lower() in g), {name.lower()})
    found = [d for d in _dirs(root) if d.lower() in group] if root.is_dir() else []
    return found[0] if len(found) == 1 else name


def folder_layout(root: Path, wanted: tuple[str, ...]) -> Layout:
    """Which folders hold which split (see the module docstring), or a UserError with the fix."""
    if wanted != (AUTO,):
        folders = {n: resolve(root, n) for n in wanted}
        return Layout(folders, listed=all((root / f / "_classes.csv").is_file() for f in folders.values()))
    found: dict[str, str] = {}
    for canon, group in zip(CANONICAL, SPLIT_ALIASES):
        hits = [d for d in _dirs(root) if d.lower() in group]
        if len(hits) > 1:
            raise UserError(f"{str(root)!r} has {' and '.join(h + '/' for h in hits)}: which is {canon}? keep one, "
                            f"or name them with --splits")
        if hits:
            found[canon] = hits[0]
    listed = {canon: (root / folder / "_classes.csv").is_file() for canon, folder in found.items()}
    if len(set(listed.values())) > 1:
        raise UserError(f"{str(root)!r}: {', '.join(found[c] + '/' for c, v in listed.items() if v)} hold Roboflow's "
                        f"_classes.csv but {', '.join(found[c] + '/' for c, v in listed.items() if not v)} do not: "
                        "export every split in one format")
    for canon, folder in found.items():
        if not listed[canon]:
            _check_labelled(root, folder, canon)
    listed_all = bool(found) and all(listed.values())
    if "train" not in found:
        if found:
            names = " and ".join(f + "/" for f in found.values())
            raise UserError(f"{str(root)!r} has {names} but no train/: add a train/ folder of class folders, or put "
                            "every image in DATA/<class>/ folders to have them split automatically")
        _check_plain(root)
        return Layout()
    if "val" in found:
        return Layout(found, listed=listed_all)
    if "test" in found:
        return Layout(found, carve=True, listed=listed_all)
    if listed_all:
        raise UserError(f"{str(root / found['train'])!r} is Roboflow's CSV export of train alone: export it with a "
                        "valid or test split too, or as 'Folder Structure' (then it is split automatically)")
    return Layout(base=found["train"])


def _check_labelled(root: Path, folder: str, canon: str) -> None:
    """UserError unless a split folder holds class folders (its labels)."""
    here = root / folder
    if _dirs(here) or not _images(here):
        return  # class folders, or an empty folder (the scan says so)
    if canon == "test":
        raise UserError(f"{str(here)!r} holds images but no class folders: an unlabelled test set (as Kaggle's are) "
                        "cannot be scored; move it out of the data folder (train/ is then split automatically) and "
                        "label it with `cnncodes predict`")
    raise UserError(f"{str(here)!r} holds images but no class folders: labels in file names (cat.1.jpg) are not "
                    f"read; sort them into {folder}/<class>/ folders, or list them in a CSV manifest (path,label)")


def _check_plain(root: Path) -> None:
    """UserError for a folder of class folders that is really a camera's export or loose images."""
    dirs = _dirs(root)
    if root.name.upper() == "DCIM" or "DCIM" in dirs or (dirs and all(_DCF.match(d) for d in dirs)):
        raise UserError(f"{str(root)!r} is a camera's or phone's export (DCIM, {dirs[0] if dirs else '100APPLE'}/): "
                        "its folders are the camera's, not labels; sort the photos into DATA/<class>/ folders, one "
                        "per class")
    if not dirs and _images(root):
        raise UserError(f"{str(root)!r} holds images but no class folders: put each class's images in "
                        "DATA/<class>/ (one folder per class), or list them in a CSV manifest (path,label)")
    inner = root / dirs[0] if len(dirs) == 1 else None
    if inner is not None and any(d.lower() in g for d in _dirs(inner) for g in SPLIT_ALIASES):
        raise UserError(f"{str(root)!r} holds one folder, {dirs[0]!r}, with the split folders in it (as an archive "
                        f"unpacks): give --data {str(inner)!r}")
