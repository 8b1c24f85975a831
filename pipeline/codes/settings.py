"""The settings every stage that runs a backbone on images shares (features, finetune): which
images, split how, and which network with which weights, declared and validated once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.cli import Common, opt, parse_splits
from ..images.scan import check_split_names
from ..images.splits import parse_fractions
from .weights import Weights


@dataclass(frozen=True)
class OnImages(Common):
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root (DATA/<split>/<class>/<image>) or a CSV "
                                                    "manifest with columns path,label[,split] (no split column: "
                                                    "split automatically by --split)")
    backbone: str = opt("resnet18", "torchvision classification model name, or timm/<name> (timm's backbones, each "
                                    "with its pretrained_cfg's eval transform; `features --list-backbones`)")
    weights: str = opt("DEFAULT", "DEFAULT (torchvision's or timm's download), none (random init), or a state_dict "
                                  "path")
    splits: str = opt("auto", "split folders, comma-separated; auto: train and val (test scored too when present; "
                              "valid/, Training/ etc. found too), train/ + test/ with val carved from train, or a "
                              "folder of class folders (or a manifest without a split column) split automatically "
                              "by --split")
    split: str = opt("0.7,0.15,0.15", "--splits auto on a folder of class folders or a manifest without a split "
                                      "column: the train, val and test shares (stratified by class, the same images "
                                      "every run and every stage); beside train/ + test/, the val share is carved "
                                      "from train")

    def __post_init__(self):
        super().__post_init__()
        check_split_names(parse_splits(self.splits))
        parse_fractions(self.split)
        Weights.parse(self.weights, self.seed)
