"""Fine-tune a backbone (full, or frozen trunk + augmentation): the tutorial recipe, fast or reference loop.

Usage: python -m pipeline finetune --data DIR --backbone resnet18 --weights DEFAULT|none|PATH --mode full|frozen
       --out RUNS_DIR

The recipe is the PyTorch transfer-learning tutorial's: SGD(lr 0.001, momentum 0.9), StepLR(7, 0.1),
25 epochs, RandomResizedCrop(224) + RandomHorizontalFlip for train, Resize(256) + CenterCrop(224)
for val, ImageNet mean/std. `--loop reference` runs it the way the tutorial does (`reference.py`)
and is the baseline; `--loop fast` (default) decodes each image once, keeps uint8 tensors on the
device and augments there (airbench style).
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from .. import UserError, __version__
from ..runs import metrics
from ..runs import folder as runs
from ..images.augment import describe
from ..core.cli import Common, command_line, opt, parse_splits, positive
from ..core.devices import device_type, precision_for, resolve_device, resolve_workers
from ..images.scan import check_classes
from ..images.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..images.scan import ImageFolderScan, scan
from ..core.files import exclusive, json_digest, write_json
from ..codes.weights import Weights

if TYPE_CHECKING:
    import torch

    from ..codes.backbone import Backbone
    from ..images.datasets import Decoded


@dataclass(frozen=True)
class Config(Common):
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root (DATA/<split>/<class>/<image>) or a CSV "
                                                    "manifest with columns path,label,split")
    backbone: str = opt("resnet18", "torchvision classification model name")
    weights: str = opt("DEFAULT", "DEFAULT (torchvision download), none (random init), or a state_dict path")
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
    splits: str = opt("train,val", "the train and val split folders, comma-separated")
    epochs: int = opt(25, "training epochs")
    batch_size: int = opt(16, "images per batch")
    lr: float = opt(0.001, "SGD learning rate")
    momentum: float = opt(0.9, "SGD momentum")
    step_size: int = opt(7, "StepLR: multiply the lr by --gamma every this many epochs")
    gamma: float = opt(0.1, "StepLR decay factor")
    resize: int = opt(256, "val: resize the shorter side to this (fast path: train images are kept at this size too)")
    crop: int = opt(224, "train RandomResizedCrop / val CenterCrop size")
    augment: str = opt("auto", "fast loop: how each batch's random crops are resized: per-image (torchvision's "
                               "antialiased resize, the tutorial's filter), batched (one roi_align per batch, "
                               "area-averaging: a few kernels per batch), auto: batched on a GPU, else per-image",
                       ("auto", "per-image", "batched"))
    compile: bool = opt(False, "fast loop: torch.compile the model (CUDA graphs on a GPU, where batch-16 steps are "
                               "launch-bound); the compile time is recorded apart")
    force: bool = opt(False, "train again even when the run folder was made from the same images and settings")

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("full", "frozen") or self.loop not in ("fast", "reference", "codes"):
            raise UserError(
                f"--mode must be full or frozen and --loop fast, reference or codes (got {self.mode!r}, {self.loop!r})"
            )
        if (self.loop == "codes") != bool(self.features) or (self.loop == "codes" and self.mode != "frozen"):
            raise UserError("--loop codes goes with --mode frozen and --features FILE.h5 (a file with cached views), "
                            "and --features only with --loop codes")
        if self.loop != "fast" and (self.compile or self.augment != "auto"):
            raise UserError("--compile and --augment apply to --loop fast (the reference loop is the tutorial's own, "
                            "and --loop codes trains a linear head on cached codes)")
        positive(epochs=self.epochs, step_size=self.step_size, crop=self.crop)
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise UserError(f"--lr must be > 0 and 0 <= --momentum < 1 (got {self.lr}, {self.momentum})")
        if self.crop > self.resize:
            raise UserError(f"--crop {self.crop} is larger than --resize {self.resize}")
        parse_splits(self.splits, exactly=2)
        Weights.parse(self.weights, self.seed)

    @property
    def split_names(self) -> tuple[str, str]:
        return parse_splits(self.splits, exactly=2)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The two loops: fast (fastpath.py) and the tutorial's (reference.py); torch is imported here,
# not at the top, so `finetune --help` starts in a fraction of a second.

def reference_phases(cfg: Config, model, optimizer, data: Decoded, device: torch.device):
    """(train phase, val phase, the loader's shuffling generator) of the tutorial's loop (`reference.py`)."""
    from ..finetune import reference

    model.to(device)
    train_loader, val_loader = reference.load_data(data.root, data.train, data.val, batch_size=cfg.batch_size,
                                                   workers=resolve_workers(cfg.workers), seed=cfg.seed,
                                                   resize=cfg.resize, crop=cfg.crop)

    def train_phase(bar):
        return reference.run_epoch(model, train_loader, device, optimizer, bar)[:2]

    def val_phase():
        loss, _, probs = reference.run_epoch(model, val_loader, device)
        return loss, probs
    return train_phase, val_phase, train_loader.generator, None


# ---------------------------------------------------------------------------------------------
# The stage.

def build(cfg: Config, n_classes: int, bb: Backbone | None = None) -> tuple[Backbone, torch.nn.Module]:
    """classifier(trunk, head) with requires_grad set for the mode; same seed -> same init."""
    import torch

    from ..codes.backbone import classifier, load_backbone

    bb = bb or load_backbone(cfg.backbone, cfg.weights, cfg.seed)
    torch.manual_seed(cfg.seed)  # the new head's init depends on the seed only, whatever the weights
    model = classifier(bb, n_classes)
    model.requires_grad_(cfg.mode == "full")
    model.head.requires_grad_(True)
    return bb, model


def fit(cfg: Config, model, phases, scheduler, optimizer, y_val: np.ndarray, run_dir: Path, n_batches: int,
        digest: str):
    """The epoch loop both paths share: train, val, step the schedule, log, keep the best epoch,
    save the resumable state; a checkpoint of the same inputs in `run_dir` is resumed.
    Returns (history, (best epoch, its val accuracy, its val probabilities), last val probabilities).
    Time in compiling (the phases' clock of first calls) is recorded apart from the epochs'."""
    from ..finetune import checkpoint

    from ..codes.backbone import FirstCalls

    train_phase, val_phase, rng, clock = phases
    clock = clock or FirstCalls(False, "cpu")  # loops without compiling
    compiled_before = 0.0  # compiling done before the loop (the frozen trunk's val codes) goes to epoch 1
    ck, parts = run_dir / "checkpoint.pt", dict(model=model, optimizer=optimizer, scheduler=scheduler, rng=rng)
    history, best, probs = checkpoint.load(ck, digest=digest, **parts) or ([], None, None)
    if history:
        print(f"resuming after epoch {len(history)} of {cfg.epochs} from {ck}")
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        mark = clock.mark()
        with tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", file=sys.stderr, disable=None,
                  leave=False) as bar:
            train_loss, train_acc = train_phase(bar)
        train_seconds = clock.since(mark)
        val_loss, probs = val_phase()
        seconds, c2 = clock.since(mark), clock.seconds
        scheduler.step()
        val_acc = float((probs.argmax(1) == y_val).mean())
        history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                        "val_acc": val_acc, "lr": lr, "seconds": seconds, "train_seconds": train_seconds,
                        **({"compile_seconds": c2 - compiled_before} if c2 > compiled_before else {})})
        write_json(run_dir / "history.json", history)
        print(f"epoch {epoch}/{cfg.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
              f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.2g}  {train_seconds:.1f}s "
              f"+ val {seconds - train_seconds:.1f}s"
              + (f" + compile {c2 - compiled_before:.1f}s" if c2 > compiled_before else ""))
        compiled_before = c2
        if best is None or val_acc > best[1]:  # strictly better, as the tutorial's best_acc
            best = (epoch, val_acc, probs)
            runs.save_state(run_dir / "best.pt", model)
        checkpoint.save(ck, digest=digest, history=history, best=best, probs=probs, **parts)
    runs.save_state(run_dir / "final.pt", model)
    ck.unlink(missing_ok=True)  # a finished run needs no resume state
    return history, best, probs


def hyperparameters(cfg: Config, precision: str) -> dict:
    fast, frozen = cfg.loop == "fast", cfg.mode == "frozen"
    return {
        "optimizer": "SGD",
        "lr": cfg.lr,
        "momentum": cfg.momentum,
        "weight_decay": 0.0,
        "scheduler": "StepLR",
        "step_size": cfg.step_size,
        "gamma": cfg.gamma,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "loss": "cross-entropy",
        "train_transform": describe(cfg.crop),
        "val_transform": f"Resize({cfg.resize}) + CenterCrop({cfg.crop})",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "train_source": f"decoded once, shorter side {cfg.resize} (PIL draft)"
        if fast
        else "full PIL decode every epoch",
        "precision": precision,
        "channels_last": fast,
        "trunk_mode": "eval" if frozen and fast else "train",
        **({"augment": "batched (one torchvision.ops.roi_align per batch)" if batched_augment(cfg) else
            "per image (torchvision antialiased resize)", "compile": cfg.compile} if fast else {}),
    }


def batched_augment(cfg: Config) -> bool:
    """--augment resolved for the device: batched on a GPU unless told otherwise."""
    return cfg.augment == "batched" or (cfg.augment == "auto" and device_type(cfg.device) == "cuda")


def write_record(cfg: Config, run_dir: Path, bb: Backbone, data: Decoded, history: list[dict], best, probs,
                 device_name: str, precision: str, inputs: dict, codes=None) -> dict:
    """model.json and metrics.json of a finished run (last epoch primary, best epoch apart)."""
    fast = cfg.loop == "fast"
    y_val = np.array([r.label for r in data.val])
    # a head trained on cached codes predicts from images transformed as those codes were
    tf = codes.header.transform if codes else {"resize": cfg.resize, "crop": cfg.crop}
    runs.write_model(run_dir, {
        "kind": "finetune", "backbone": bb.name, "weights": bb.weights_id, "weights_arg": cfg.weights,
        "weights_sha256": bb.weights.sha256, "seed": cfg.seed, "classes": data.classes,
        **{k: tf[k] for k in ("resize", "crop", "interpolation", "mean", "std") if k in tf},
        "fast_decode": fast or bool(codes and tf.get("decode") != "PIL full"), "file": "final.pt"})
    pred = probs.argmax(1)
    confidence, loss, kind = metrics.per_image(y_val, probs)
    preds = runs.predictions([r.path for r in data.val], y_val, pred, confidence, loss)
    per_epoch = [h["train_seconds"] for h in history]
    short, method = method_names(cfg.mode, cfg.loop)
    doc = runs.record(
        method=method, short=short, stage="finetune", dataset=data.dataset,
        classes=data.classes, backbone=bb.name, weights=bb.weights_id, n_train=len(data.train), n_val=len(data.val),
        val=metrics.scores(y_val, pred, data.classes, probs), selection="last epoch",
        seconds={"train": sum(h["seconds"] for h in history), "decode": data.seconds if fast else 0.0,
                 "predict": history[-1]["seconds"] - history[-1]["train_seconds"],
                 **({"compile": sum(h.get("compile_seconds", 0.0) for h in history)} if cfg.compile else {}),
                 # the cached codes and views it trained on: what the extraction of those cost
                 **({"extract": (codes.header.extract_seconds or 0.0) + codes.header.views[cfg.split_names[0]][
                     "seconds"]} if codes else {})},
        device=device_name, seed=cfg.seed,
        preds=preds, score_kind=kind, command=command_line(cfg, "finetune"),
        mode=cfg.mode, loop=cfg.loop, head=None, data_root=str(data.root), epochs=cfg.epochs,
        hyperparameters=hyperparameters(cfg, precision) | ({
            "train_source": f"{codes.header.views[cfg.split_names[0]]['n']} cached augmented views per image "
                            "(one drawn per image per epoch)", "trunk_mode": "eval", "features_file": cfg.features}
            if codes else {}),
        best_val={"epoch": best[0], **metrics.scores(y_val, best[2].argmax(1), data.classes, best[2]),
                  "selection": "best epoch on val (reference protocol)"},
        history="history.json",
        seconds_per_epoch=metrics.mean_epoch_seconds(per_epoch),
        seconds_per_epoch_all=float(np.mean(per_epoch)),
        check_seconds=0.0 if fast else data.seconds,  # reference: the up-front decode check of every file
        skipped=data.skipped, inputs=inputs,
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    )
    runs.write_predictions(run_dir, preds, data.classes, kind)
    runs.write_metrics(run_dir, doc)
    return doc


def method_names(mode: str, loop: str) -> tuple[str, str]:
    """(short name, description) of a fine-tuning run. The two frozen schemes differ in more than
    speed: the fast loop keeps the trunk's BatchNorm in eval mode (a linear head on augmented
    codes), the tutorial's loop leaves it in train mode, so its running statistics drift with
    every batch; they are named apart so nobody reads one's number as the other's."""
    tutorial = loop == "reference"
    if loop == "codes":
        return ("frozen, BN eval (cached views)", "frozen trunk with its BatchNorm in eval mode, new linear head "
                "trained on augmented views cached by `features --views K`, one per image per epoch: the fast "
                "frozen scheme without a backbone pass while training")
    if mode == "full":
        return (("full FT (tutorial loop)", "full fine-tuning, the tutorial's own loop (reference implementation)")
                if tutorial else ("full FT", "full fine-tuning, fast loop (decode once, augment on the device)"))
    if tutorial:
        return ("frozen, BN train (tutorial loop)",
                "frozen trunk with its BatchNorm in train mode (statistics drift), new linear head, augmentation: "
                "the tutorial's frozen scheme and loop")
    return ("frozen, BN eval", "frozen trunk with its BatchNorm in eval mode (fixed statistics), new linear head, "
            "augmentation: fast loop")


def run_inputs(cfg: Config, s: ImageFolderScan, device_type: str) -> dict:
    """Everything that determines a fine-tuning run: a rerun with the same is a hit that does no work."""
    w = Weights.parse(cfg.weights, cfg.seed)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()
                if k not in ("out", "name", "device", "force")}
    return {"images": s.digest(), "dataset": s.name, "settings": settings, "weights": w.key,
            "weights_sha256": w.sha256, "device": device_type, "cnncodes": __version__,
            "versions": {"torch": version("torch"), "torchvision": version("torchvision")}}


def train(cfg: Config) -> tuple[Path, dict]:
    """Run the stage: returns the run folder and the metrics.json document written there."""
    from ..codes.backbone import load_backbone
    from ..images.datasets import decode_once

    device, fast = resolve_device(cfg.device), cfg.loop == "fast"
    s = scan(cfg.data, cfg.split_names)  # cheap checks first: a missing folder is reported before any download
    suffix = {"fast": "", "reference": "-reference", "codes": "-codes"}[cfg.loop]
    run_dir = Path(cfg.out) / (cfg.name or runs.run_name(s.name, cfg.backbone, Weights.parse(cfg.weights).tag,
                                                         f"finetune-{cfg.mode}{suffix}"))
    codes = cached_codes(cfg, s) if cfg.loop == "codes" else None
    inputs = run_inputs(cfg, s, device.type) | ({"codes": codes.header.fingerprint,
                                                 "views": codes.header.views.get(cfg.split_names[0])} if codes else {})
    if not cfg.force and (doc := runs.up_to_date(run_dir, inputs)) is not None:
        print(f"up to date: {run_dir} was made from the same images and settings; nothing to do (--force trains again)")
        return run_dir, doc
    bb = load_backbone(cfg.backbone, cfg.weights, cfg.seed)  # a bad name or file fails before decoding
    data = codes_as_decoded(codes, cfg.split_names, s.root) if codes else decode_once(
        s.root, s, cfg.split_names, keep=fast, resize=cfg.resize, crop=cfg.crop,
        workers=resolve_workers(cfg.workers), device=device)
    check_classes([r.label for r in data.train], data.classes, f"{s.name} ({cfg.split_names[0]})")
    bb, model = build(cfg, len(data.classes), bb)
    # the previous run stays whole until this one is complete; a killed one resumes from its folder
    with exclusive(run_dir, "finetune run"), runs.staged(run_dir, resumable=True) as work:
        doc = fit_and_record(cfg, bb, model, data, device, inputs, work, run_dir, codes)
    return run_dir, doc


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


def codes_as_decoded(codes, splits: tuple[str, str], root: Path) -> Decoded:
    """The records a run writes, from a features file instead of decoded images."""
    from ..images.scan import ImageRecord
    from ..images.datasets import Decoded

    recs = {n: [ImageRecord(p, int(y), 0, 0) for p, y in zip(codes.splits[n].paths, codes.splits[n].labels)]
            for n in splits}
    return Decoded(codes.header.dataset, codes.classes, recs[splits[0]], recs[splits[1]],
                   {n: codes.splits[n].skipped for n in splits}, root=root)


def fit_and_record(cfg: Config, bb, model, data: Decoded, device, inputs: dict, work: Path, run_dir: Path,
                   codes=None) -> dict:
    """Train in `work` (the staged run folder) and write the run's records there."""
    import torch

    from ..finetune.fast import codes_phases, fast_phases

    fast = cfg.loop == "fast"
    params = model.head.parameters() if cfg.mode == "frozen" else model.parameters()
    # fused SGD on a GPU: one kernel per step for all parameters, the same update (the reference
    # loop keeps the tutorial's plain optimizer)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                fused=device.type == "cuda" and fast and cfg.loop != "codes" or None)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    precision = precision_for(device.type) if fast else "fp32"  # the reference loop stays fp32
    if codes is not None:
        tr, va = (codes.splits[n] for n in cfg.split_names)
        model.to(device)
        phases = codes_phases(model, optimizer, tr.views, tr.labels, va.codes, va.labels, device, seed=cfg.seed,
                              batch_size=cfg.batch_size)
        precision = codes.header.precision
    elif fast:
        phases = fast_phases(model, optimizer, data, device, frozen=cfg.mode == "frozen", seed=cfg.seed,
                             batch_size=cfg.batch_size, crop=cfg.crop, batched=batched_augment(cfg),
                             compile=cfg.compile)
    else:
        phases = reference_phases(cfg, model, optimizer, data, device)
    print(f"{data.dataset}: {len(data.train)} train / {len(data.val)} val images; {bb.name} ({bb.weights_id}), "
          f"{cfg.mode} fine-tuning, {cfg.loop} loop on {device} ({precision}); run folder {run_dir}")
    y_val = np.array([r.label for r in data.val])
    history, best, probs = fit(cfg, model, phases, scheduler, optimizer, y_val, work,
                               -(-len(data.train) // cfg.batch_size), json_digest(inputs))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    doc = write_record(cfg, work, bb, data, history, best, probs, device_name, precision, inputs, codes)
    return doc


def run(cfg: Config) -> None:
    run_dir, doc = train(cfg)
    print(f"val accuracy {doc['val']['accuracy']:.4f} (last epoch), best {doc['best_val']['accuracy']:.4f} "
          f"(epoch {doc['best_val']['epoch']}); {doc['seconds_per_epoch']:.1f}s per epoch")
    print(run_dir)
