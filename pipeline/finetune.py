"""Fine-tune a backbone (full, or frozen trunk + augmentation): the tutorial recipe, reference loop or fast path.

Usage: python -m pipeline finetune --data DIR --backbone resnet18 --weights DEFAULT|none|PATH --mode full|frozen --out RUNS_DIR

The recipe is the PyTorch transfer-learning tutorial's: SGD(lr 0.001, momentum 0.9), StepLR(7, 0.1),
25 epochs, RandomResizedCrop(224) + RandomHorizontalFlip for train, Resize(256) + CenterCrop(224)
for val, ImageNet mean/std. `--loop reference` runs it the way the tutorial does (PIL decode and
transforms in DataLoader workers every epoch, fp32) and is the baseline; `--loop fast` (default)
decodes each image once, keeps uint8 tensors on the device and augments there (airbench style).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torchvision.transforms import v2
from tqdm import tqdm

from . import UserError, metrics
from .backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone, classifier, fold_batchnorm, load_backbone
from .cache import atomic_write
from .config import Common, opt, resolve_device, resolve_workers
from .data import BadImage, ImageFolderScan, ImageRecord, load_rgb, scan
from .features import eval_transform, normalize, precision_for, weights_tag

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # RandomResizedCrop defaults, as in the tutorial


@dataclass(frozen=True)
class Config(Common):
    data: Path = opt(Path("data/hymenoptera_data"), "ImageFolder root: DATA/<split>/<class>/<image>")
    backbone: str = opt("resnet18", "torchvision classification model name")
    weights: str = opt("DEFAULT", "DEFAULT (torchvision download), none (random init), or a state_dict path")
    mode: str = opt("full", "full: train every parameter; frozen: train only the new head", ("full", "frozen"))
    loop: str = opt("fast", "fast: decode once, augment tensors on the device; reference: the tutorial's loop", ("fast", "reference"))
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


def check(cfg: Config) -> tuple[str, str]:
    """Validate what argparse cannot; returns the (train, val) split names."""
    if cfg.mode not in ("full", "frozen") or cfg.loop not in ("fast", "reference"):
        raise UserError(f"--mode must be full or frozen and --loop fast or reference (got {cfg.mode!r}, {cfg.loop!r})")
    if min(cfg.epochs, cfg.batch_size, cfg.step_size, cfg.crop) < 1 or cfg.lr <= 0 or not 0 <= cfg.momentum < 1:
        raise UserError("--epochs, --batch-size, --step-size and --crop must be >= 1, --lr > 0 and 0 <= --momentum < 1")
    if cfg.crop > cfg.resize:
        raise UserError(f"--crop {cfg.crop} is larger than --resize {cfg.resize}")
    splits = tuple(s for s in cfg.splits.split(",") if s)
    if len(splits) != 2:
        raise UserError(f"--splits needs exactly two folders, train and val (got {cfg.splits!r})")
    return splits  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Data: scan, drop undecodable files once up front, and (fast path) keep the decoded tensors.

class Decode(torch.utils.data.Dataset):
    """One image per item as (tensor, reason); reason is "" or why the file is unusable.

    how: "check" decodes fully and keeps nothing (the reference loop re-reads files each epoch);
    "train" keeps the whole image with its shorter side at `resize`; "val" keeps the eval crop.
    """

    def __init__(self, root: Path, records: list[ImageRecord], how: str, resize: int, crop: int):
        self.root, self.records, self.how, self.resize = Path(root), records, how, resize
        self.val_tf = eval_transform(resize, crop)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        path = self.root / self.records[i].path
        try:
            if self.how == "check":
                load_rgb(path)
                return torch.empty(0, dtype=torch.uint8), ""
            im = load_rgb(path, draft=self.resize)  # JPEG draft: decode big files at >= resize px
            if self.how == "val":
                return self.val_tf(im), ""
            return v2.functional.pil_to_tensor(v2.functional.resize(im, [self.resize], antialias=True)), ""
        except BadImage as e:
            return torch.empty(0, dtype=torch.uint8), str(e)


@dataclass
class Data:
    dataset: str
    classes: list[str]
    train: list[ImageRecord]  # usable files only
    val: list[ImageRecord]
    skipped: dict[str, list[tuple[str, str]]]  # split -> (relative path, reason)
    train_images: list[torch.Tensor] | None = None  # fast path: uint8 CHW, shorter side = resize
    val_images: torch.Tensor | None = None  # fast path: uint8 N x 3 x crop x crop
    seconds: float = 0.0


def load_data(cfg: Config, device: torch.device, s: ImageFolderScan | None = None) -> Data:
    """Decode every scanned file once (in --workers processes), skipping and recording bad ones."""
    tr, va = check(cfg)
    s = s or scan(cfg.data, (tr, va))
    fast = cfg.loop == "fast"
    t0 = time.perf_counter()
    kept, images, skipped = {}, {}, {n: list(sp.skipped) for n, sp in s.splits.items()}
    for split, how in ((tr, "train"), (va, "val")):
        recs = s.splits[split].items
        ds = Decode(cfg.data, recs, how if fast else "check", cfg.resize, cfg.crop)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=resolve_workers(cfg.workers))
        kept[split], images[split] = [], []
        for r, (x, why) in zip(recs, tqdm(loader, desc=f"decode {split}", file=sys.stderr, disable=None, leave=False)):
            if why:
                skipped[split].append((r.path, why))
                print(f"  skipped {r.path}: {why}")
            else:
                kept[split].append(r)
                images[split].append(x.to(device) if fast else None)
        if not kept[split]:
            raise UserError(f"split {split!r} has no decodable images")
    data = Data(s.name, s.classes, kept[tr], kept[va], skipped)
    if fast:
        data.train_images, data.val_images = images[tr], torch.stack(images[va])
    data.seconds = time.perf_counter() - t0
    return data


# ---------------------------------------------------------------------------------------------
# Reference loop: the tutorial's train_model, one phase at a time, as it behaves.

class ImageList(torch.utils.data.Dataset):
    """ImageFolder over the scanned (and decode-checked) file list: PIL decode + transform per item."""

    def __init__(self, root: Path, records: list[ImageRecord], transform):
        self.root, self.records, self.transform = Path(root), records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i]
        return self.transform(load_rgb(self.root / r.path)), r.label  # load_rgb == ImageFolder's pil_loader


def reference_transforms(resize: int, crop: int):
    """The tutorial's PIL transforms: (train, val)."""
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    return (T.Compose([T.RandomResizedCrop(crop), T.RandomHorizontalFlip(), T.ToTensor(), norm]),
            T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), norm]))


def mean_epoch_seconds(seconds: list[float]) -> float:
    """Mean epoch time, leaving out the first (warm-up) epoch when more than 2 were run."""
    return float(np.mean(seconds[1:] if len(seconds) > 2 else seconds))


def reference_loaders(cfg: Config, data: Data):
    train_tf, val_tf = reference_transforms(cfg.resize, cfg.crop)
    workers = resolve_workers(cfg.workers)
    g = torch.Generator().manual_seed(cfg.seed)  # shuffling and the workers' augmentation seeds
    train = torch.utils.data.DataLoader(ImageList(cfg.data, data.train, train_tf), cfg.batch_size, shuffle=True,
                                        num_workers=workers, generator=g)
    # The tutorial shuffles val too; we keep file order so per-image predictions line up (eval
    # mode makes the order irrelevant to the numbers).
    val = torch.utils.data.DataLoader(ImageList(cfg.data, data.val, val_tf), cfg.batch_size, num_workers=workers)
    return train, val


def reference_epoch(model, loader, device, optimizer=None, bar=None):
    """One phase of the tutorial loop: train when given an optimizer, else eval. Returns
    (mean loss, accuracy, softmax probabilities in loader order or None)."""
    training = optimizer is not None
    model.train(training)  # frozen mode included: the whole model in train mode, BN stats drift
    running_loss, running_corrects, probs = 0.0, 0, []
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        if training:
            optimizer.zero_grad()
        with torch.set_grad_enabled(training):
            outputs = model(inputs)
            loss = F.cross_entropy(outputs, labels)
            if training:
                loss.backward()
                optimizer.step()
        running_loss += loss.item() * inputs.size(0)
        running_corrects += int((outputs.argmax(1) == labels).sum())
        if not training:
            probs.append(outputs.softmax(1).cpu())
        if bar is not None:
            bar.update(1)
    n = len(loader.dataset)
    return running_loss / n, running_corrects / n, torch.cat(probs).numpy() if probs else None


# ---------------------------------------------------------------------------------------------
# Fast path: augmentation on uint8 tensors in the main process, no host sync inside the step loop.

def crop_params(h: int, w: int, u: list[float]) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params driven by 22 given uniforms (10 tries x 2, then position),
    so a seeded torch.Generator decides every crop. Same distribution as torchvision's."""
    lo, hi = math.log(RATIO[0]), math.log(RATIO[1])
    for t in range(10):
        area = h * w * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[2 * t])
        ar = math.exp(lo + (hi - lo) * u[2 * t + 1])
        cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(u[20] * (h - ch + 1)), int(u[21] * (w - cw + 1)), ch, cw
    r = w / h  # fallback: central crop clamped to the ratio range
    cw, ch = (w, int(round(w / RATIO[0]))) if r < RATIO[0] else (int(round(h * RATIO[1])), h) if r > RATIO[1] else (w, h)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def augment(images: list[torch.Tensor], crop: int, g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop(crop) + RandomHorizontalFlip on uint8 CHW tensors -> uint8 N x 3 x crop x crop.

    The random numbers come from a CPU generator (no device sync, same crops on CPU and GPU).
    The crops are cut from the image stored at shorter side `resize`, not from the original file:
    the same crop geometry relative to the image, but small crops are upsampled from fewer pixels.
    """
    u = torch.rand(len(images), 23, generator=g).tolist()
    out = []
    for im, ui in zip(images, u):
        i, j, h, w = crop_params(im.shape[1], im.shape[2], ui)
        x = v2.functional.resize(im[:, i:i + h, j:j + w], [crop, crop], antialias=True)
        out.append(x.flip(-1) if ui[22] < 0.5 else x)
    return torch.stack(out)


def train_one_epoch(model, images, labels, optimizer, g, batch_size: int, crop: int, frozen_trunk=None, bar=None):
    """One pass over the train images in a seeded random order; returns (mean loss, accuracy).

    With `frozen_trunk` (an eval-mode, BN-folded copy of model.trunk) only model.head learns."""
    frozen = frozen_trunk is not None
    device = labels.device
    cuda = device.type == "cuda"
    model.train()
    if frozen:
        model.trunk.eval()  # honest frozen features: BN keeps its pretrained statistics, no dropout
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    order = torch.randperm(len(images), generator=g)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        x = normalize(augment([images[i] for i in idx.tolist()], crop, g), channels_last=True)
        y = labels[idx.to(device, non_blocking=True)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            if frozen:
                with torch.no_grad():  # the trunk runs on each augmented batch but learns nothing
                    x = frozen_trunk(x)
                out = model.head(x)
            else:
                out = model(x)
            loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().float() * len(idx)  # stays on the device: no sync per step
        correct += (out.argmax(1) == y).sum()
        if bar is not None:
            bar.update(1)
    return loss_sum.item() / len(images), correct.item() / len(images)


@torch.no_grad()
def forward(net, x: torch.Tensor, batch_size: int, images: bool) -> torch.Tensor:
    """net over x in batches, eval mode, float32 out; `images` means x is uint8 to normalise."""
    net.eval()
    outs = []
    for b in range(0, len(x), batch_size):
        xb = normalize(x[b:b + batch_size], channels_last=True) if images else x[b:b + batch_size]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            outs.append(net(xb).float())
    return torch.cat(outs)


def evaluate(net, x: torch.Tensor, labels: torch.Tensor, batch_size: int, images: bool = True):
    """Val loss and softmax probabilities (numpy) of net on cached val tensors or codes."""
    logits = forward(net, x, batch_size, images)
    return F.cross_entropy(logits, labels).item(), logits.softmax(1).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# The stage.

def build(cfg: Config, n_classes: int, bb: Backbone | None = None) -> tuple[Backbone, torch.nn.Module]:
    """classifier(trunk, head) with requires_grad set for the mode; same seed -> same init."""
    bb = bb or load_backbone(cfg.backbone, cfg.weights, cfg.seed)
    torch.manual_seed(cfg.seed)  # the new head's init depends on the seed only, whatever the weights
    model = classifier(bb, n_classes)
    model.requires_grad_(cfg.mode == "full")
    model.head.requires_grad_(True)
    return bb, model


def save_state(model: torch.nn.Module, path: Path) -> None:
    """A CPU state_dict, written under a temporary name and renamed: never a truncated checkpoint."""
    atomic_write(path, lambda fh: torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, fh))


def train(cfg: Config) -> tuple[Path, dict]:
    """Run the stage: returns the run folder and the metrics.json document written there."""
    device = resolve_device(cfg.device)
    s = scan(cfg.data, check(cfg))  # cheap checks first: a missing folder is reported before any download
    bb = load_backbone(cfg.backbone, cfg.weights, cfg.seed)  # a bad name or file fails before decoding
    data = load_data(cfg, device, s)
    bb, model = build(cfg, len(data.classes), bb)
    frozen, fast = cfg.mode == "frozen", cfg.loop == "fast"
    name = cfg.name or f"{data.dataset}-{cfg.backbone}-{weights_tag(cfg.weights)}-finetune-{cfg.mode}" + ("" if fast else "-reference")
    run_dir = Path(cfg.out) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", "model.json"):  # a rerun killed midway must not leave the old
        (run_dir / stale).unlink(missing_ok=True)  # run's record beside new checkpoints
    y_val = np.array([r.label for r in data.val])
    params = model.head.parameters() if frozen else model.parameters()
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    n_batches = -(-len(data.train) // cfg.batch_size)
    precision = precision_for(device) if fast else "fp32"  # the reference loop stays fp32

    if fast:
        model.to(device, memory_format=torch.channels_last)  # faster with oneDNN/cuDNN alike
        g = torch.Generator().manual_seed(cfg.seed)  # order + augmentation: reproducible on CPU
        train_labels = torch.tensor([r.label for r in data.train], device=device)
        val_labels = torch.tensor(y_val, device=device)
        t0 = time.perf_counter()
        # Frozen: the trunk never changes, so fold its BatchNorms once (faster, same function), and
        # since val has no augmentation its codes never change either: compute them once.
        frozen_trunk = fold_batchnorm(model.trunk)[0].to(memory_format=torch.channels_last) if frozen else None
        val_x = forward(frozen_trunk, data.val_images, cfg.batch_size, images=True) if frozen else data.val_images
        data.seconds += time.perf_counter() - t0

        def train_phase(bar):
            return train_one_epoch(model, data.train_images, train_labels, optimizer, g, cfg.batch_size, cfg.crop, frozen_trunk, bar)

        def val_phase():
            return evaluate(model.head if frozen else model, val_x, val_labels, cfg.batch_size, images=not frozen)
    else:
        model.to(device)
        train_loader, val_loader = reference_loaders(cfg, data)

        def train_phase(bar):
            return reference_epoch(model, train_loader, device, optimizer, bar)[:2]

        def val_phase():
            loss, _, probs = reference_epoch(model, val_loader, device)
            return loss, probs

    print(f"{data.dataset}: {len(data.train)} train / {len(data.val)} val images; {bb.name} ({bb.weights_id}), "
          f"{cfg.mode} fine-tuning, {cfg.loop} loop on {device} ({precision}); run folder {run_dir}")
    history, best = [], None
    for epoch in range(1, cfg.epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        with tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", file=sys.stderr, disable=None, leave=False) as bar:
            train_loss, train_acc = train_phase(bar)
        t1 = time.perf_counter()
        val_loss, probs = val_phase()
        t2 = time.perf_counter()
        scheduler.step()
        val_acc = float((probs.argmax(1) == y_val).mean())
        history.append({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                        "val_acc": val_acc, "lr": lr, "seconds": t2 - t0, "train_seconds": t1 - t0})
        metrics.write_json(run_dir / "history.json", history)
        print(f"epoch {epoch}/{cfg.epochs}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
              f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {lr:.2g}  {t1 - t0:.1f}s + val {t2 - t1:.1f}s")
        if best is None or val_acc > best[1]:  # strictly better, as the tutorial's best_acc
            best = (epoch, val_acc, probs)
            save_state(model, run_dir / "best.pt")
    save_state(model, run_dir / "final.pt")

    metrics.write_json(run_dir / "model.json", {
        "kind": "finetune", "backbone": bb.name, "weights": bb.weights_id, "weights_arg": cfg.weights,
        "weights_sha256": bb.weights_sha256, "seed": cfg.seed, "classes": data.classes,
        "resize": cfg.resize, "crop": cfg.crop, "fast_decode": fast, "file": "final.pt"})
    pred = probs.argmax(1)
    per_epoch = [h["train_seconds"] for h in history]
    method = "fine-tune (full)" if not frozen else "frozen + augmentation"
    doc = metrics.record(
        method=method + ("" if fast else " [reference loop]"), stage="finetune", dataset=data.dataset,
        classes=data.classes, backbone=bb.name, weights=bb.weights_id, n_train=len(data.train), n_val=len(data.val),
        val=metrics.scores(y_val, pred, data.classes, probs), selection="last epoch",
        seconds={"train": sum(h["seconds"] for h in history), "decode": data.seconds if fast else 0.0,
                 "predict": history[-1]["seconds"] - history[-1]["train_seconds"]},
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", seed=cfg.seed,
        preds=metrics.predictions([r.path for r in data.val], y_val, pred, probs.max(1)),
        mode=cfg.mode, loop=cfg.loop, head=None, data_root=str(cfg.data), epochs=cfg.epochs,
        hyperparameters={
            "optimizer": "SGD", "lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": 0.0,
            "scheduler": "StepLR", "step_size": cfg.step_size, "gamma": cfg.gamma, "batch_size": cfg.batch_size,
            "epochs": cfg.epochs, "loss": "cross-entropy",
            "train_transform": f"RandomResizedCrop({cfg.crop}, scale={SCALE}, ratio=(3/4, 4/3)) + RandomHorizontalFlip(0.5)",
            "val_transform": f"Resize({cfg.resize}) + CenterCrop({cfg.crop})", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "train_source": f"decoded once, shorter side {cfg.resize} (PIL draft)" if fast else "full PIL decode every epoch",
            "precision": precision, "channels_last": fast, "trunk_mode": "eval" if frozen and fast else "train"},
        best_val={"epoch": best[0], **metrics.scores(y_val, best[2].argmax(1), data.classes, best[2]),
                  "selection": "best epoch on val (reference protocol)"},
        history="history.json",
        seconds_per_epoch=mean_epoch_seconds(per_epoch),
        seconds_per_epoch_all=float(np.mean(per_epoch)),
        check_seconds=0.0 if fast else data.seconds,  # reference: the up-front decode check of every file
        skipped=data.skipped, config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    )
    metrics.write_json(run_dir / "metrics.json", doc)
    return run_dir, doc


def run(cfg: Config) -> None:
    run_dir, doc = train(cfg)
    print(f"val accuracy {doc['val']['accuracy']:.4f} (last epoch), best {doc['best_val']['accuracy']:.4f} "
          f"(epoch {doc['best_val']['epoch']}); {doc['seconds_per_epoch']:.1f}s per epoch")
    print(run_dir)
