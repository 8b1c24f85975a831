"""Several backbones side by side (`cnncodes sweep`): the line-up as typed, the images every one
of them coded, and what each costs (parameters; its ms per image is in its features file).

    "mobilenet_v2=FILE.pth timm/tf_efficientnet_lite0=DEFAULT resnet18=none"

A name without `=WEIGHTS` takes DEFAULT. Parsing imports no torch; `parameters` builds the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from .store import read_attrs, read_paths
from .weights import Weights


@dataclass(frozen=True)
class Entry:
    backbone: str
    weights: str = "DEFAULT"

    @property
    def label(self) -> str:
        """'mobilenet_v2 (mobilenet_v2_imagenet_features)': the backbone, and its weights' short tag."""
        return f"{self.backbone} ({Weights.parse(self.weights).tag})"


def parse_lineup(text: str, seed: int = 0) -> tuple[Entry, ...]:
    """The backbones of --backbones (space- or comma-separated NAME[=WEIGHTS]); a one-line error for
    an empty list, a repeated entry or weights that do not parse."""
    entries = []
    for word in text.replace(",", " ").split():
        name, _, weights = word.partition("=")
        if not name:
            raise UserError(f"--backbones: {word!r} names no backbone (NAME=WEIGHTS)")
        Weights.parse(weights or "DEFAULT", seed)
        entries.append(Entry(name, weights or "DEFAULT"))
    if not entries:
        raise UserError("--backbones is empty: give NAME=WEIGHTS pairs, e.g. 'resnet18=none mobilenet_v2=DEFAULT'")
    twice = {e for e in entries if entries.count(e) > 1}
    if twice:
        raise UserError(f"--backbones names {sorted(e.label for e in twice)} twice")
    return tuple(entries)


def coded_paths(path: Path, splits: list[str]) -> set[str]:
    """The images a features file holds codes of, in the given splits."""
    have = read_attrs(path)["splits"]
    return {p for s in splits if s in have for p in read_paths(path, s)}


def not_in_all(files: list[Path], splits: list[str]) -> dict[Path, list[str]]:
    """By file, the images it coded that another file did not (skipped there): each comparison
    across backbones must be on the same images, so these are left out of every file's runs."""
    held = {f: coded_paths(f, splits) for f in files}
    common = set.intersection(*held.values()) if held else set()
    return {f: sorted(h - common) for f, h in held.items()}


def parameters(entry: Entry, seed: int = 0) -> int:
    """The trunk's parameter count (builds the network: a file or random weights need no network)."""
    from .backbone import load_backbone

    return int(sum(p.numel() for p in load_backbone(entry.backbone, entry.weights, seed).trunk.parameters()))
