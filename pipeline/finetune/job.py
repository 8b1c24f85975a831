"""What a fine-tuning run is given: the Recipe (its settings, built by the stage from its Config)
and the Job (the recipe with the backbone, the data and the device it trains on, and what its
record cites). The library takes these, never the stage's Config. Imports no torch: the stage
builds them at `finetune --help` speed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..core.devices import BF16, device_type, precision_for
from ..images.transforms import Preprocess

if TYPE_CHECKING:
    import torch

    from ..codes.backbone import Backbone
    from ..codes.store import Codes
    from ..images.datasets import Decoded


@dataclass(frozen=True)
class Recipe:
    """The settings of a fine-tuning run (the stage's flags of the same names); `pre`, the one object
    that says how images are seen: the eval transform, the size train images are kept at and
    RandomResizedCrop's size (its crop), and the mean/std every loop normalises with."""

    backbone: str
    weights: str  # DEFAULT, none or a state_dict path, as given
    mode: str  # full | frozen
    loop: str  # fast | reference | codes
    splits: tuple[str, str]  # train, val
    pre: Preprocess  # the weights' own eval transform and normalisation (flags may set its sizes)
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    step_size: int
    gamma: float
    augment: str  # auto | per-image | batched
    compile: bool
    features: str  # --loop codes: the features file with cached views
    seed: int
    workers: int
    device: str  # as given (auto, cpu, cuda...)
    precision: str = "auto"  # the --precision flag (the fast loop's; the reference loop is fp32)

    @property
    def fast(self) -> bool:
        return self.loop == "fast"

    @property
    def frozen(self) -> bool:
        return self.mode == "frozen"

    @property
    def batched(self) -> bool:
        """--augment resolved for the device: batched on a GPU unless told otherwise."""
        return self.augment == "batched" or (self.augment == "auto" and device_type(self.device) == "cuda")


@dataclass(frozen=True)
class Job:
    """One run's material: the recipe, the loaded backbone, the data (decoded images, or the records
    of cached `codes` for --loop codes), the device, and the inputs, command and settings its
    metrics.json records (`inputs` also keys the resumable checkpoint)."""

    recipe: Recipe
    bb: Backbone
    data: Decoded
    device: torch.device
    inputs: dict
    command: str
    config: dict
    codes: Codes | None = None
    tuning: dict | None = None  # how the learning rate was chosen (tune.tune_lr), when it was
    test: list | None = None  # the test split's records (ImageRecord), scored once by the final model
    repeats: dict | None = None  # the recipe on --repeats re-drawn splits (repeats.repeated_scores), when asked for

    @property
    def y_val(self) -> np.ndarray:
        return np.array([r.label for r in self.data.val])

    @property
    def batches(self) -> int:
        """Train batches per epoch."""
        return -(-len(self.data.train) // self.recipe.batch_size)

    @property
    def precision(self) -> str:
        """The fast loop's --precision resolved for the device (core.devices.precision_for); the
        reference loop stays the tutorial's fp32; cached codes: theirs."""
        if self.codes is not None:
            return self.codes.header.precision
        if not self.recipe.fast:
            return "fp32"
        return precision_for(self.device.type, self.recipe.precision, self.precision_key)

    @property
    def precision_key(self) -> str:
        """What --precision auto's decision for the fast loop holds for (core.precision)."""
        from ..core.precision import decision_key

        return decision_key(self.recipe.backbone, self.recipe.batch_size, f"finetune {self.recipe.mode} step")

    @property
    def bf16(self) -> bool:
        """Whether the fast loop runs forward and loss under bf16 autocast."""
        return self.codes is None and self.precision == BF16

    @property
    def device_name(self) -> str:
        import torch

        return torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
