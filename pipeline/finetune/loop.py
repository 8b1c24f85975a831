"""The epoch loop every fine-tuning loop shares (`fit`): train, val, step the schedule, log, keep the
best epoch, save the resumable state. The loops differ only in their Phases (fast.py, cached.py,
reference.py): what one epoch's training and validation do.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from .. import UserError
from ..core.files import json_digest, write_json
from ..runs import folder as runs
from . import checkpoint
from .checkpoint import Best, Progress, Training

if TYPE_CHECKING:
    from ..codes.backbone import FirstCalls
    from .job import Job


class Phases(NamedTuple):
    """One loop's epoch: `train(bar)` -> (mean loss, accuracy) over the train images, updating the
    progress bar per batch; `val()` -> (mean loss, softmax probabilities in file order); `rng`, the
    generator of order and augmentation (checkpointed); `clock`, the compile clock of first calls
    (None: the loop compiles nothing)."""

    train: Callable[[tqdm | None], tuple[float, float]]
    val: Callable[[], tuple[float, np.ndarray]]
    rng: torch.Generator
    clock: FirstCalls | None = None


def fit(job: Job, training: Training, phases: Phases, run_dir: Path) -> Progress:
    """The epoch loop all loops share: a checkpoint of the same inputs in `run_dir` is resumed;
    best.pt, final.pt and history.json are written there. Returns the final Progress (history,
    best epoch, last val probabilities). Time in compiling (the phases' clock of first calls) is
    recorded apart from the epochs'."""
    from ..codes.backbone import FirstCalls

    epochs, y_val = job.recipe.epochs, job.y_val
    phases = phases._replace(clock=phases.clock or FirstCalls(False, "cpu"))  # loops without compiling
    ck, digest = run_dir / "checkpoint.pt", json_digest(job.inputs)
    history, best, probs = (checkpoint.load(ck, digest=digest, training=training, rng=phases.rng)
                            or Progress([], None, None))
    if history:
        print(f"resuming after epoch {len(history)} of {epochs} from {ck}")
    compiled_before = 0.0  # compiling done before the loop (the frozen trunk's val codes) goes to epoch 1
    for epoch in range(len(history) + 1, epochs + 1):
        row, probs = one_epoch(training, phases, y_val, dict(total=job.batches, desc=f"epoch {epoch}/{epochs}"))
        row = {"epoch": epoch, **row}
        if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
            raise UserError(f"training diverged at epoch {epoch} (train loss {row['train_loss']:g}, val loss "
                            f"{row['val_loss']:g} with lr {row['lr']:g}): lower --lr (or --lr-grid)")
        if phases.clock.seconds > compiled_before:
            row["compile_seconds"] = phases.clock.seconds - compiled_before
        compiled_before = phases.clock.seconds
        history.append(row)
        write_json(run_dir / "history.json", history)
        print_epoch(row, epochs)
        if best is None or row["val_acc"] > best.acc:  # strictly better, as the tutorial's best_acc
            best = Best(epoch, row["val_acc"], probs)
            runs.save_state(run_dir / "best.pt", training.model)
        checkpoint.save(ck, digest=digest, training=training, rng=phases.rng, progress=Progress(history, best, probs))
    runs.save_state(run_dir / "final.pt", training.model)
    ck.unlink(missing_ok=True)  # a finished run needs no resume state
    return Progress(history, best, probs)


def one_epoch(training: Training, phases: Phases, y_val: np.ndarray, bar: dict) -> tuple[dict, np.ndarray]:
    """Train, validate, step the schedule: (the epoch's history row, its val probabilities). `bar`:
    the progress bar's total and description."""
    optimizer, scheduler, clock = training.optimizer, training.scheduler, phases.clock
    lr = optimizer.param_groups[0]["lr"]
    mark = clock.mark()
    with tqdm(**bar, unit="batch", file=sys.stderr, disable=None, leave=False) as b:
        train_loss, train_acc = phases.train(b)
    train_seconds = clock.since(mark)
    val_loss, probs = phases.val()
    seconds = clock.since(mark)
    scheduler.step()
    val_acc = float((probs.argmax(1) == y_val).mean())
    return {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "seconds": seconds, "train_seconds": train_seconds}, probs


def print_epoch(row: dict, epochs: int) -> None:
    compile_seconds = row.get("compile_seconds")
    print(f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}  "
          f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}  lr {row['lr']:.2g}  {row['train_seconds']:.1f}s "
          f"+ val {row['seconds'] - row['train_seconds']:.1f}s"
          + (f" + compile {compile_seconds:.1f}s" if compile_seconds is not None else ""))
