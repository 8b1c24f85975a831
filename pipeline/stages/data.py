"""Check an image folder: list its classes, images and skipped files (download hymenoptera when absent).

Usage: cnncodes data --data DIR
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.cli import Settings, opt, parse_splits
from ..images.download import HYMENOPTERA_URL, fetch_hymenoptera
from ..images.scan import ImageFolderScan, scan
from ..images.splits import parse_fractions


DEMO_DATA = Path("data/hymenoptera_data")  # the demo's folder: the one path fetched when absent


@dataclass(frozen=True)
class Config(Settings):
    data: Path = opt(DEMO_DATA, "ImageFolder root, a folder of class folders, or a CSV manifest; the default path "
                                "alone is downloaded (hymenoptera) when absent: any other absent path is an error")
    splits: str = opt("auto", "comma-separated split folder names; auto: train and val (and test when present), "
                              "train/ + test/ with val carved from train, or a folder of class folders split "
                              "automatically by --split")
    split: str = opt("0.7,0.15,0.15", "--splits auto on a folder of class folders: train, val and test shares "
                                      "(beside train/ + test/: the val share carved from train)")


def counts_line(s: ImageFolderScan) -> str:
    parts = []
    for n, sp in s.splits.items():
        parts.append(f"{n}: {len(sp.items)} images" + (f" ({len(sp.skipped)} skipped)" if sp.skipped else ""))
    return f"{s.name}: classes {s.classes}; " + "; ".join(parts)


def run(cfg: Config) -> None:
    if not cfg.data.exists():
        if Path(cfg.data).resolve() != DEMO_DATA.resolve():  # a typo must not fill the user's path with ants
            raise UserError(f"data folder {str(cfg.data)!r} does not exist (only the demo's {str(DEMO_DATA)!r} is "
                            "downloaded when absent); check the path")
        print(f"{cfg.data} is absent: downloading {HYMENOPTERA_URL}")
        fetch_hymenoptera(cfg.data)
    s = scan(cfg.data, parse_splits(cfg.splits), parse_fractions(cfg.split))
    if s.rule:
        print(s.split_note())
    print(counts_line(s))
    for sp in s.splits.values():
        for rel, why in sp.skipped:
            print(f"  skipped {rel}: {why}")
