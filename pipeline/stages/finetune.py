"""Fine-tune a backbone (full, or frozen trunk + augmentation): the tutorial recipe, fast or reference loop.

Usage: python -m pipeline finetune --data DIR --backbone resnet18 --weights DEFAULT|none|PATH --mode full|frozen
       --out RUNS_DIR

The recipe is the PyTorch transfer-learning tutorial's: SGD(lr 0.001, momentum 0.9), StepLR(7, 0.1),
25 epochs, RandomResizedCrop(224) + RandomHorizontalFlip for train, Resize(256) + CenterCrop(224)
for val, ImageNet mean/std; where the weights carry their own preprocessing (torchvision's enum
weights, a timm name's pretrained_cfg) its sizes, filter and mean/std are used instead, as `features`
uses them (one Preprocess, `Recipe.pre`). `--loop reference` runs it the way the tutorial does (`reference.py`)
and is the baseline; `--loop fast` (default) decodes each image once, keeps uint8 tensors on the
device and augments there (airbench style).

The stage checks the flags, finds the run folder and what a rerun would reuse, loads the backbone
and the data, and hands a Job to the library (`pipeline.finetune`: train.py runs it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from importlib.metadata import version
from pathlib import Path

from .. import UserError, __version__
from ..codes.settings import OnImages
from ..codes.timm_models import is_timm
from ..codes.weights import Weights
from ..core import dist
from ..core.cli import command_line, flag_values, opt, parse_splits, path_component, positive
from ..core.devices import PRECISION_HELP, PRECISIONS, resolve_device, resolve_workers
from ..core.files import exclusive
from ..finetune.job import Job, Recipe
from ..images.scan import ImageFolderScan, check_classes, scan
from ..images.splits import parse_fractions
from ..images.transforms import Preprocess
from ..runs import folder as runs


@dataclass(frozen=True)
class Config(OnImages):
    mode: str = opt("full", "full: train every parameter; frozen: train only the new head", ("full", "frozen"))
    loop: str = opt(
        "fast",
        "fast: decode once, augment tensors on the device; reference: the tutorial's loop; codes (with --mode "
        "frozen): train the head on the augmented views cached by `features --views K`, no backbone pass",
        ("fast", "reference", "codes"),
    )
    features: str = opt("", "--loop codes: the features file holding the cached views (`features --views K`)")
    out: Path = opt(Path("reports/runs"), "runs folder; the run goes to OUT/NAME/")
    name: str = opt("", "run folder name (default <dataset>-<backbone>-<weights>-finetune-<mode>[-reference])")
    epochs: int = opt(25, "training epochs")
    batch_size: int = opt(16, "images per batch")
    lr: float = opt(0.001, "SGD learning rate")
    momentum: float = opt(0.9, "SGD momentum")
    step_size: int = opt(7, "StepLR: multiply the lr by --gamma every this many epochs")
    gamma: float = opt(0.1, "StepLR decay factor")
    resize: int = opt(0, "val: resize the shorter side to this (fast path: train images are kept at this size too); "
                         "0 = the weights' own, as `features` uses (torchvision's enum weights carry it), else 256")
    crop: int = opt(0, "train RandomResizedCrop / val CenterCrop size; 0 = the weights' own, else 224")
    tune_lr: bool = opt(False, "choose the learning rate from --lr-grid on a held-out part of train (--holdout), "
                               "as the heads choose theirs by CV: the whole recipe per candidate, its cost counted")
    lr_grid: str = opt("0.0003,0.001,0.003", "--tune-lr: the learning rates tried (around the recipe's 0.001)")
    holdout: float = opt(0.2, "--tune-lr: the fraction of train held out (stratified, seeded) to score them")
    repeats: int = opt(0, "also pool train and val and re-draw them this many times (the draws of classify "
                          "--repeats, so they pair by repeat), the recipe (and --tune-lr) again on each: mean ± sd")
    augment: str = opt("auto", "fast loop: how each batch's random crops are resized: per-image (torchvision's "
                               "antialiased resize, the tutorial's filter), batched (one roi_align per batch, "
                               "area-averaging: a few kernels per batch), auto: batched on a GPU, else per-image",
                       ("auto", "per-image", "batched"))
    precision: str = opt("auto", "fast loop: " + PRECISION_HELP + " (the reference loop is the tutorial's fp32)",
                         PRECISIONS)
    compile: bool = opt(False, "fast loop: torch.compile the model (CUDA graphs on a GPU, where batch-16 steps are "
                               "launch-bound); the compile time is recorded apart")
    force: bool = opt(False, "train again even when the run folder was made from the same images and settings")

    def __post_init__(self):
        super().__post_init__()
        if self.name:
            path_component(self.name, "--name")
        if self.mode not in ("full", "frozen") or self.loop not in ("fast", "reference", "codes"):
            raise UserError(
                f"--mode must be full or frozen and --loop fast, reference or codes (got {self.mode!r}, {self.loop!r})"
            )
        if (self.loop == "codes") != bool(self.features) or (self.loop == "codes" and self.mode != "frozen"):
            raise UserError("--loop codes goes with --mode frozen and --features FILE.h5 (a file with cached views), "
                            "and --features only with --loop codes")
        if self.loop != "fast" and self.precision == "bf16":
            raise UserError("--precision bf16 applies to --loop fast (the reference loop is the tutorial's fp32 and "
                            "--loop codes trains on cached codes); use auto or fp32")
        if self.loop != "fast" and (self.compile or self.augment != "auto"):
            raise UserError("--compile and --augment apply to --loop fast (the reference loop is the tutorial's own, "
                            "and --loop codes trains a linear head on cached codes)")
        positive(epochs=self.epochs, step_size=self.step_size)
        if self.resize < 0 or self.crop < 0:
            raise UserError(f"--resize and --crop must be 0 (the weights' own) or sizes (got {self.resize}, "
                            f"{self.crop})")
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.momentum < 1:
            raise UserError(f"--lr must be a finite rate > 0 and 0 <= --momentum < 1 (got {self.lr}, {self.momentum})")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise UserError(f"--gamma must be a finite factor >= 0 (got {self.gamma})")
        if self.resize and self.crop > self.resize:
            raise UserError(f"--crop {self.crop} is larger than --resize {self.resize}")
        if self.tune_lr and (self.loop == "codes" or not 0 < self.holdout < 0.5 or not self.grid):
            raise UserError("--tune-lr goes with --loop fast or reference, --holdout between 0 and 0.5 and --lr-grid a "
                            f"comma-separated list of positive rates (got {self.loop!r}, {self.holdout}, "
                            f"{self.lr_grid!r})")
        if not 0 <= self.repeats <= 1000 or self.repeats == 1 or (self.repeats and self.loop == "codes"):
            raise UserError(f"--repeats must be 0 (off) or 2 to 1000, with --loop fast or reference (the cached "
                            f"views are of train's images only; got {self.repeats}, {self.loop!r})")
        if self.splits != "auto":
            parse_splits(self.splits, exactly=2)

    @property
    def grid(self) -> tuple[float, ...]:
        try:
            g = tuple(float(v) for v in self.lr_grid.split(",") if v.strip())
        except ValueError:
            return ()
        return g if g and all(math.isfinite(v) and v > 0 for v in g) else ()

    @property
    def split_names(self) -> tuple[str, str]:
        """(train, val); with auto, a test split is scored too when the data has one."""
        if self.splits == "auto":
            return ("train", "val")
        return parse_splits(self.splits, exactly=2)  # type: ignore[return-value]

    @property
    def recipe(self) -> Recipe:
        """The settings the library trains with; the eval transform resolved as `features` resolves it
        (the flags where given, the rest from the weights)."""
        weights = Weights.parse(self.weights, self.seed)
        flags = self.resize and self.crop and not is_timm(self.backbone)  # timm: its cfg's filter
        base = Preprocess(source="flags") if flags else weights.preprocess(self.backbone)
        pre = replace(base, resize=self.resize or base.resize, crop=self.crop or base.crop)
        if pre.crop > pre.resize:
            raise UserError(f"the eval transform would crop {pre.crop} px from images resized to {pre.resize}; "
                            "give --crop no larger than --resize")
        return Recipe(splits=self.split_names, pre=pre, **{f.name: getattr(self, f.name) for f in fields(Recipe)
                                                           if f.name not in ("splits", "pre")})


def train(cfg: Config) -> tuple[Path, dict]:
    """Run the stage: returns the run folder and the metrics.json document written there."""
    from ..codes.backbone import load_backbone
    from ..finetune.cached import codes_as_decoded
    from ..finetune.train import build, finetune
    from ..images.datasets import decode_once

    if dist.from_env().world > 1:  # no DistributedDataParallel here: each rank would train the whole run alone
        raise UserError("finetune runs in one process: under torchrun every rank would train the same model into the "
                        "same run folder; run it without torchrun (features, sweep and predict share the ranks)")
    device, recipe = resolve_device(cfg.device), cfg.recipe
    # cheap checks first: a missing folder is reported before any download
    s = scan(cfg.data, ("auto",) if cfg.splits == "auto" else cfg.split_names, parse_fractions(cfg.split))
    suffix = {"fast": "", "reference": "-reference", "codes": "-codes"}[cfg.loop] + ("-tuned" if cfg.tune_lr else "")
    run_dir = Path(cfg.out) / (cfg.name or runs.run_name(s.name, cfg.backbone, Weights.parse(cfg.weights).tag,
                                                         f"finetune-{cfg.mode}{suffix}"))
    codes = cached_codes(cfg, s) if cfg.loop == "codes" else None
    inputs = run_inputs(cfg, s, device.type) | ({"codes": codes.header.fingerprint,
                                                 "views": codes.header.views.get(cfg.split_names[0])} if codes else {})
    if (doc := runs.up_to_date(run_dir, inputs, cfg.force)) is not None:
        print(f"up to date: {run_dir} was made from the same images and settings; nothing to do (--force trains again)")
        return run_dir, doc
    bb = load_backbone(cfg.backbone, cfg.weights, cfg.seed)  # a bad name or file fails before decoding
    print(f"eval transform: {recipe.pre.describe()}")
    data = codes_as_decoded(codes, cfg.split_names, s.root) if codes else decode_once(
        s.root, s, cfg.split_names, keep=cfg.loop == "fast", pre=recipe.pre,
        workers=resolve_workers(cfg.workers), device=device)
    check_classes([r.label for r in data.train], data.classes, f"{s.name} ({cfg.split_names[0]})")
    job = Job(recipe, bb, data, device, inputs, command_line(cfg, "finetune"), settings(cfg), codes,
              test=s.splits["test"].items if "test" in s.splits and cfg.splits == "auto" else None)
    if recipe.fast:  # --precision auto measured here the first time (finetune.step_timing)
        from ..codes.autoprec import settle
        from ..finetune.step_timing import time_steps

        settle(job.precision_key, device.type, recipe.precision, lambda: time_steps(job))
    with exclusive(run_dir, "finetune run"):
        if cfg.repeats:  # first: each draw tunes its own lr (ties: the recipe's), from the same pretrained weights
            from ..finetune.repeats import repeated_scores

            job = replace(job, repeats=repeated_scores(job, cfg.repeats, cfg.grid if cfg.tune_lr else (), cfg.holdout))
        if cfg.tune_lr:  # before the run's own training: the trials start from the same pretrained weights
            from ..finetune.tune import tune_lr

            tuning = tune_lr(job, cfg.grid, cfg.holdout)
            job = replace(job, recipe=replace(recipe, lr=tuning["chosen"]), tuning=tuning)
        bb, model = build(job.recipe, len(data.classes), bb)
        # the previous run stays whole until this one is complete; a killed one resumes from its folder
        with runs.staged(run_dir, resumable=True) as work:
            doc = finetune(job, model, work, run_dir)
    return run_dir, doc


def settings(cfg: Config) -> dict:
    return flag_values(cfg)


def run_inputs(cfg: Config, s: ImageFolderScan, device_type: str) -> dict:
    """Everything that determines a fine-tuning run: a rerun with the same is a hit that does no work."""
    w = Weights.parse(cfg.weights, cfg.seed)
    return {"images": s.digest(), "dataset": s.name,
            "settings": {k: v for k, v in settings(cfg).items() if k not in ("out", "name", "device", "force")},
            "weights": w.key, "weights_sha256": w.sha256, "device": device_type, "cnncodes": __version__,
            "transform": cfg.recipe.pre.spec(cfg.loop == "fast"),
            "versions": {"torch": version("torch"), "torchvision": version("torchvision")}}


def cached_codes(cfg: Config, s: ImageFolderScan):
    """The features file of --loop codes, checked: made from these images and weights, with views."""
    from ..codes.store import read_codes

    codes = read_codes(cfg.features)
    h, train = codes.header, cfg.split_names[0]
    if h.inputs.get("image_list") != s.digest() or h.backbone != cfg.backbone \
            or h.inputs.get("weights") != Weights.parse(cfg.weights, cfg.seed).key:
        raise UserError(f"{cfg.features} was not made from the images under {str(cfg.data)!r} with {cfg.backbone} "
                        f"({cfg.weights}); re-run features with the same --data, --backbone and --weights")
    if train not in codes.splits or codes.splits[train].views is None:
        raise UserError(f"{cfg.features} holds no augmented views of {train!r}; run `features --views K` first")
    return codes


def run(cfg: Config) -> None:
    run_dir, doc = train(cfg)
    print(f"val accuracy {doc['val']['accuracy']:.4f} (last epoch), best {doc['best_val']['accuracy']:.4f} "
          f"(epoch {doc['best_val']['epoch']}); {doc['seconds_per_epoch']:.1f}s per epoch")
    print(run_dir)
