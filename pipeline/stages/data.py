"""Check an image folder: list its classes, images and skipped files (download hymenoptera when absent).

Usage: cnncodes data --data DIR
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.cli import Settings, opt, parse_splits
from ..images.download import HYMENOPTERA_URL, fetch_hymenoptera
from ..images.scan import ImageFolderScan, scan


@dataclass(frozen=True)
class Config(Settings):
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root; downloaded (hymenoptera) when absent")
    splits: str = opt("train,val", "comma-separated split folder names")


def counts_line(s: ImageFolderScan) -> str:
    parts = []
    for n, sp in s.splits.items():
        parts.append(f"{n}: {len(sp.items)} images" + (f" ({len(sp.skipped)} skipped)" if sp.skipped else ""))
    return f"{s.name}: classes {s.classes}; " + "; ".join(parts)


def run(cfg: Config) -> None:
    if not cfg.data.exists():
        print(f"{cfg.data} is absent: downloading {HYMENOPTERA_URL}")
        fetch_hymenoptera(cfg.data)
    s = scan(cfg.data, parse_splits(cfg.splits))
    print(counts_line(s))
    for sp in s.splits.values():
        for rel, why in sp.skipped:
            print(f"  skipped {rel}: {why}")
