"""A fine-tuning run's resumable state, saved after every epoch in its staged run folder:
model, optimizer and scheduler states, the random generators (the loop's own and torch's global
one, which dropout and the tutorial's PIL transforms draw from), the history and the best epoch
so far. A rerun with the same inputs (compared by digest) continues after the last saved epoch and
produces the history an uninterrupted run would; a checkpoint of other inputs is ignored.
Read with torch.load(weights_only=True): tensors, numbers, strings, lists and dicts only.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..core.files import atomic_write


class Training(NamedTuple):
    """What the loop trains and steps: the model, its optimizer and learning-rate schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


class Best(NamedTuple):
    """The best epoch so far: its number, val accuracy and val probabilities."""

    epoch: int
    acc: float
    probs: np.ndarray


class Progress(NamedTuple):
    """Where the epoch loop stands: the history rows, the best epoch (None before the first) and the
    last epoch's val probabilities."""

    history: list[dict]
    best: Best | None
    probs: np.ndarray | None


def save(path: Path, *, digest: str, training: Training, rng: torch.Generator, progress: Progress) -> None:
    model, optimizer, scheduler = training
    history, best, probs = progress
    state = {"digest": digest, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "history": history, "best_epoch": best.epoch, "best_acc": best.acc,
             "best_probs": torch.from_numpy(np.ascontiguousarray(best.probs)), "probs": torch.from_numpy(probs)}
    atomic_write(path, lambda fh: torch.save(state, fh))


def load(path: Path, *, digest: str, training: Training, rng: torch.Generator) -> Progress | None:
    """The saved progress, its states restored into the given objects, or None when there is no
    usable checkpoint of these inputs at `path`."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint cut short by a crash is no checkpoint: start over
        return None
    if not isinstance(state, dict) or state.get("digest") != digest:
        return None
    model, optimizer, scheduler = training
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng.set_state(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    best = Best(state["best_epoch"], state["best_acc"], state["best_probs"].numpy())
    return Progress(state["history"], best, state["probs"].numpy())
