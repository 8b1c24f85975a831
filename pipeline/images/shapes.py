"""The folder shapes people download, told apart before a scan (docs/reliability.md has the table).

With `--splits auto`, split folders are found by name (`split_of`): whatever their case, by the
usual aliases (Roboflow's `valid/`, `Training/` and `Testing/` of many Kaggle sets), and less one
known prefix (`seg_`) and one known suffix (`_set`, `_images`): Kaggle's `seg_train/`,
`training_set/`, `train_images/`. Only a whole name matches, so a class folder `test_tube/` or
`testing_kit/` is never a split. A split folder that holds exactly one folder of its own name and
nothing else (Kaggle's `seg_train/seg_train/<class>/`) is entered, and so is a data folder that
holds only a folder of its own name (`flowers/flowers/<class>/`). Beside split folders, a folder
of unlabelled images named for prediction (`seg_pred/`, `pred/`, `predict/`, `prediction/`) is
ignored with one printed line, as is any other folder that is not a split (`Layout.ignored`).

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
# a folder name's affixes that still name a split (Kaggle: seg_train, training_set, train_images); one of each
PREFIXES, SUFFIXES = ("seg_",), ("_set", "_images")
PREDICTION = {"pred", "predict", "prediction"}  # an unlabelled folder to predict on, beside the split folders
# a camera's folders (Design rule for Camera File system: three digits, five characters)
_DCF = re.compile(r"^\d{3}[A-Za-z0-9_]{5}$")
_IMAGE = re.compile(r"\.(jpe?g|png|ppm|bmp|pgm|tiff?|webp|gif|heic)$", re.IGNORECASE)


@dataclass(frozen=True)
class Layout:
    folders: dict[str, str] = field(default_factory=dict)  # split name -> its folder under the root
    carve: bool = False  # train/ + test/: val carved from train
    listed: bool = False  # Roboflow's CSV export: each split folder's _classes.csv labels its images
    base: str = ""  # no split folders: the folder of class folders to split automatically ("" = the root)
    ignored: tuple[tuple[str, str], ...] = ()  # (folder beside the split folders, why it is not read)

    @property
    def automatic(self) -> bool:
        return not self.folders


def _dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(folder: Path) -> int:
    return sum(1 for f in folder.iterdir() if f.is_file() and _IMAGE.search(f.name))


def bare(name: str) -> str:
    """A folder name as a split would be spelled: lower case, less one PREFIXES and one SUFFIXES
    ('seg_train' -> 'train', 'Training_set' -> 'training', 'test_tube' -> 'test_tube')."""
    low = name.lower()
    low = next((low[len(p):] for p in PREFIXES if low.startswith(p) and len(low) > len(p)), low)
    return next((low[:-len(x)] for x in SUFFIXES if low.endswith(x) and len(low) > len(x)), low)


def split_of(name: str) -> str | None:
    """The split ("train", "val", "test") a folder name names, whole, after `bare`; else None."""
    return next((c for c, g in zip(CANONICAL, SPLIT_ALIASES) if bare(name) in g), None)


def entered(root: Path, folder: str) -> str:
    """`folder`, or folder/<same name> when it holds that one folder and nothing else (Kaggle's
    seg_train/seg_train/<class>/: an archive inside the split folder); `folder` "" is root itself."""
    here = root / folder
    if not here.is_dir():
        return folder
    name = here.name if folder else here.resolve().name  # the data folder itself may be given as "."
    inside = [e for e in here.iterdir() if not e.name.startswith(".")]
    if len(inside) == 1 and inside[0].is_dir() and inside[0].name.lower() == name.lower():
        return f"{folder}/{inside[0].name}" if folder else inside[0].name
    return folder


def resolve(root: Path, name: str) -> str:
    """The folder of split `name` under root: itself, or its one alias present (valid/ for val,
    seg_train/ for train), entered when doubly nested."""
    if (root / name).is_dir():
        return entered(root, name)
    group = next((g for g in SPLIT_ALIASES if name.lower() in g), {name.lower()})
    found = [d for d in _dirs(root) if bare(d) in group] if root.is_dir() else []
    return entered(root, found[0]) if len(found) == 1 else name


def _ignored(root: Path, found: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The folders beside the split folders, each with why it is not read."""
    used = {f.split("/")[0] for f in found.values()}
    out = []
    for d in (d for d in _dirs(root) if d not in used):
        if bare(d) in PREDICTION and not _dirs(root / entered(root, d)):
            out.append((d, "unlabelled images to predict on (no class folders): not read; label them with "
                           "`cnncodes predict`"))
        else:
            out.append((d, "not a split folder (train, val, test or an alias): not read"))
    return tuple(out)


def folder_layout(root: Path, wanted: tuple[str, ...]) -> Layout:
    """Which folders hold which split (see the module docstring), or a UserError with the fix."""
    inner = entered(root, "") if root.is_dir() else ""
    if inner:  # the data folder holds only a folder of its own name (flowers/flowers/): the same shape inside
        return _prefixed(folder_layout(root / inner, wanted), inner)
    if wanted != (AUTO,):
        folders = {n: resolve(root, n) for n in wanted}
        return Layout(folders, listed=all((root / f / "_classes.csv").is_file() for f in folders.values()))
    found: dict[str, str] = {}
    named = {d: split_of(d) for d in _dirs(root)}  # the root listed once, each name read once
    for canon in CANONICAL:
        hits = [d for d, split in named.items() if split == canon]
        if len(hits) > 1:
            raise UserError(f"{str(root)!r} has {' and '.join(h + '/' for h in hits)}: which is {canon}? keep one, "
                            f"or name them with --splits")
        if hits:
            found[canon] = entered(root, hits[0])
    if found:
        return _with_splits(root, found)
    _check_plain(root)
    return Layout()


def _prefixed(layout: Layout, inner: str) -> Layout:
    """`layout` of root/inner as seen from root."""
    return Layout({k: f"{inner}/{v}" for k, v in layout.folders.items()}, layout.carve, layout.listed,
                  f"{inner}/{layout.base}" if layout.base else inner,
                  tuple((f"{inner}/{d}", why) for d, why in layout.ignored))


def _with_splits(root: Path, found: dict[str, str]) -> Layout:
    """The layout of the split folders found (split -> folder), or a UserError with the fix."""
    ignored = _ignored(root, found)
    listed = {canon: (root / folder / "_classes.csv").is_file() for canon, folder in found.items()}
    if len(set(listed.values())) > 1:
        raise UserError(f"{str(root)!r}: {', '.join(found[c] + '/' for c, v in listed.items() if v)} hold Roboflow's "
                        f"_classes.csv but {', '.join(found[c] + '/' for c, v in listed.items() if not v)} do not: "
                        "export every split in one format")
    for canon, folder in found.items():
        if not listed[canon]:
            _check_labelled(root, folder, canon)
    listed_all = all(listed.values())
    if "train" not in found:
        names = " and ".join(f + "/" for f in found.values())
        raise UserError(f"{str(root)!r} has {names} but no train/: add a train/ folder of class folders, or put "
                        "every image in DATA/<class>/ folders to have them split automatically")
    if "val" in found:
        return Layout(found, listed=listed_all, ignored=ignored)
    if "test" in found:
        return Layout(found, carve=True, listed=listed_all, ignored=ignored)
    if listed_all:
        raise UserError(f"{str(root / found['train'])!r} is Roboflow's CSV export of train alone: export it with a "
                        "valid or test split too, or as 'Folder Structure' (then it is split automatically)")
    return Layout(base=found["train"], ignored=ignored)


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
    if inner is not None and any(split_of(d) for d in _dirs(inner)):
        raise UserError(f"{str(root)!r} holds one folder, {dirs[0]!r}, with the split folders in it (as an archive "
                        f"unpacks): give --data {str(inner)!r}")
