"""The PyTorch transfer-learning tutorial's loop, as it behaves, with explicit arguments.

Put it beside the tutorial ("Transfer Learning for Computer Vision Tutorial", train_model): PIL
decode and transforms in DataLoader workers every epoch, fp32, one phase at a time, and in frozen
mode the whole model in train mode, so the trunk's BatchNorm statistics drift. It is the baseline
that `finetune --loop reference` and `bench` run (`reference_phases`); the fast path is `fast.py`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from ..core.devices import resolve_workers
from ..images.datasets import ImageFiles
from ..images.scan import ImageRecord
from ..images.transforms import Preprocess
from .loop import Phases

if TYPE_CHECKING:
    from .job import Job
    from .loop import Training


def reference_transforms(pre: Preprocess = Preprocess()) -> tuple[T.Compose, T.Compose]:
    """The tutorial's PIL transforms for the weights' own preprocessing `pre`: (train, val).
    Train: RandomResizedCrop(its crop) + flip; val: Resize(its resize, its filter) + CenterCrop(its
    crop); both normalised with its mean/std. The default is the tutorial's own: 256/224, bilinear,
    ImageNet mean/std (ResNet18's)."""
    norm = T.Normalize(pre.mean, pre.std)
    mode = T.InterpolationMode(pre.interpolation)
    return (T.Compose([T.RandomResizedCrop(pre.crop), T.RandomHorizontalFlip(), T.ToTensor(), norm]),
            T.Compose([T.Resize(pre.resize, interpolation=mode), T.CenterCrop(pre.crop), T.ToTensor(), norm]))


def image_folder(root: Path | str, records: list[ImageRecord], transform) -> ImageFiles:
    """torchvision's ImageFolder over a scanned (and decode-checked) file list: (tensor, label)."""
    return ImageFiles(root, records, transform, labels=True)


def load_data(root: Path | str, train: list[ImageRecord], val: list[ImageRecord], *, batch_size: int, workers: int,
              seed: int, pre: Preprocess = Preprocess()):
    """(train loader, val loader) as the tutorial builds them, shuffling from a seeded generator.

    The tutorial shuffles val too; we keep file order so per-image predictions line up (eval mode
    makes the order irrelevant to the numbers)."""
    train_tf, val_tf = reference_transforms(pre)
    g = torch.Generator().manual_seed(seed)  # shuffling and the workers' augmentation seeds
    return (torch.utils.data.DataLoader(image_folder(root, train, train_tf), batch_size, shuffle=True,
                                        num_workers=workers, generator=g),
            torch.utils.data.DataLoader(image_folder(root, val, val_tf), batch_size, num_workers=workers))


def run_epoch(model, loader, device, optimizer=None, bar=None):
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


def reference_phases(job: Job, training: Training) -> Phases:
    """The tutorial's loop as the shared epoch loop's Phases (the loader's shuffling generator)."""
    r, data, device, (model, optimizer, _) = job.recipe, job.data, job.device, training
    model.to(device)
    train_loader, val_loader = load_data(data.root, data.train, data.val, batch_size=r.batch_size,
                                         workers=resolve_workers(r.workers), seed=r.seed, pre=r.pre)

    def train_phase(bar):
        return run_epoch(model, train_loader, device, optimizer, bar)[:2]

    def val_phase():
        loss, _, probs = run_epoch(model, val_loader, device)
        return loss, probs
    return Phases(train_phase, val_phase, train_loader.generator)


@torch.no_grad()
def eval_pass(model, loader, device) -> int:
    """The tutorial's eval-mode forward over a loader (what bench times as reference extraction);
    returns the number of images seen."""
    model.eval()
    return sum(len(model(inputs.to(device)).cpu()) for inputs, _ in loader)  # .cpu() waits for the GPU
