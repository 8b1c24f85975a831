"""A run folder: what classify and finetune write, and predict and report read.

RUNS/<run>/ holds
  model.json    how to rebuild the model: kind (head | finetune), backbone, weights, classes,
                resize/crop, and `file`, the model file beside it
  model.npz     a classify head (a fitted sklearn Pipeline) as arrays and JSON, read without
                pickle (heads.head_arrays); or final.pt / best.pt (state_dicts, read with
                torch.load(weights_only=True)): loading a run folder runs no code
  metrics.json  the run record, schema cnncodes-metrics/1 (see `record`)
  history.json  per-epoch log of a fine-tune
A (re)run is written into a hidden sibling folder and swapped in when complete (`staged`): the
folder holds the previous complete run until then, never a mix of two.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from .. import UserError
from ..core.fresh import is_current
from ..core.files import atomic_write, exclusive, json_digest, read_json, write_json, write_text
from ..core.precision import processor

SCHEMA = "cnncodes-metrics/1"


def run_name(*parts: str) -> str:
    """A folder name from its parts (dataset, backbone, weights tag, method), safe on any filesystem."""
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-.") or "x" for p in parts)


@contextlib.contextmanager
def staged(run_dir: Path | str, resumable: bool = False):
    """Write a run into a hidden sibling folder and swap it in only when complete: a (re)run that is
    interrupted leaves the previous complete run as it was, never half of a new one. A `resumable`
    run (fine-tuning, under a lock) keeps its folder when interrupted, for the next run to resume."""
    run_dir = Path(run_dir)
    work = run_dir.with_name(f".{run_dir.name}.partial" + ("" if resumable else f"-{os.getpid()}"))
    if not resumable:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    except BaseException:
        if not resumable:
            shutil.rmtree(work, ignore_errors=True)
        raise
    old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(work, run_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def locked(run_dir: Path, what: str):
    """Hold a run folder while it is checked and written (core.files.exclusive), by a hidden file
    beside it (a runs folder lists only runs), removed after: a second writer is refused at once
    (timeout 0), so none waits on the file."""
    lock = run_dir.with_name(f".{run_dir.name}.lock")
    with exclusive(run_dir, what, lock):
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # only by its holder: a refused writer leaves the holder's file


def up_to_date(run_dir: Path, inputs: dict, force: bool = False) -> dict | None:
    """The run's metrics.json when the folder holds a complete run made from these `inputs`: a
    rerun does no work. None when there is no run there (or `force`). A run made from other inputs
    is refused unless `force` (core.fresh, the one rule); a folder that is not a run is refused
    always: a run is only ever swapped in over a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"{str(run_dir)!r} is a file, not a run folder; give another --out or name")
        return None  # nothing there, or an empty folder: nothing to lose
    m, spec = run_dir / "metrics.json", run_dir / "model.json"
    if not (m.is_file() or spec.is_file()):
        raise UserError(f"{str(run_dir)!r} exists and is not a run folder (no metrics.json or model.json); give "
                        "another --out or name, or move it away: only a run is ever replaced by a run")
    try:
        doc = read_json(m, "run record") if m.is_file() and spec.is_file() else None
    except UserError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        if force:
            return None
        raise UserError(f"{str(run_dir)!r} holds an unfinished or damaged run; --force replaces it")
    recorded = doc.get("inputs") if isinstance(doc.get("inputs"), dict) else {"digest": doc.get("inputs_digest")}
    return doc if is_current(run_dir, recorded, inputs, force) else None


def save_head(path: Path, model) -> Path:
    """A fitted head as arrays and JSON (`heads.head_arrays`): no pickle, so loading runs no code."""
    from ..heads.registry import head_arrays

    arrays = head_arrays(model)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def save_state(path: Path, model) -> Path:
    """A CPU state_dict, written under a temporary name and renamed: never a truncated checkpoint."""
    import torch

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda fh: torch.save(state, fh))


def write_model(run_dir: Path, spec: dict) -> Path:
    return write_json(Path(run_dir) / "model.json", spec)


def write_metrics(run_dir: Path, doc: dict) -> Path:
    return write_json(Path(run_dir) / "metrics.json", doc)


def read_model(run_dir: Path | str) -> dict:
    """model.json of a run folder; UserError when the folder is not a run."""
    spec_file = Path(run_dir) / "model.json"
    if not spec_file.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder with a model.json (made by classify or finetune)")
    return read_json(spec_file, "model record")


def model_file(run_dir: Path | str, spec: dict) -> Path:
    """The model file model.json names; UserError when it leaves the run folder or is missing."""
    root = Path(run_dir).resolve()
    f = (root / str(spec.get("file", ""))).resolve()
    if root not in f.parents:
        raise UserError(f"model.json in {str(run_dir)!r} names {spec.get('file')!r}, outside its run folder: refused")
    if not f.is_file():
        raise UserError(f"{str(run_dir)!r} lacks its model file {spec.get('file')!r}; re-run the stage that made it")
    return f


def load_head(run_dir: Path | str, spec: dict, trust_pickle: bool = False):
    """The fitted head of a classify run. model.npz is read with allow_pickle=False and only the
    allowed step types are built; a pickle (the model.joblib of older runs) can run any code as it
    loads, so it needs `trust_pickle`."""
    f = model_file(run_dir, spec)
    if f.suffix == ".npz":
        import zipfile

        from ..heads.registry import head_from_arrays

        try:
            with np.load(f, allow_pickle=False) as arrays:
                return head_from_arrays(arrays, len(spec["classes"]) if "classes" in spec else None)
        except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{f} is not a readable head ({type(e).__name__}: {e})") from None
    if f.suffix not in (".joblib", ".pkl", ".pickle"):
        raise UserError(f"{f} is not a model file this version reads (model.npz, or a pickle with --trust-pickle)")
    if not trust_pickle:
        raise UserError(f"{f} is a pickle, and loading one can run any code it holds; re-run classify to save the "
                        "head in the safe format, or pass --trust-pickle if you made this file yourself")
    import joblib

    return joblib.load(f)


def predictions(paths: list[str], y_true, y_pred, score, loss=None) -> list[dict]:
    """Per-image val predictions: what the report's paired tests and top losses need. `score` is
    the prediction's confidence (probability or margin), `loss` the image's loss (metrics.per_image)."""
    loss = [None] * len(paths) if loss is None else loss
    return [
        {"path": p, "true": int(t), "pred": int(q), "score": float(s), **({} if e is None else {"loss": float(e)})}
        for p, t, q, s, e in zip(paths, y_true, y_pred, score, loss)
    ]


PREDICTIONS_CSV = "predictions.csv"


def write_predictions(run_dir: Path, preds: list[dict], classes: list[str], score_kind: str) -> Path:
    """predictions.csv beside metrics.json: one row per val image, worst loss first, so the file
    opens on what went wrong (path, true, predicted, probability or margin, loss, correct). Names
    and paths go through `csv_safe`: a spreadsheet never runs one as a formula."""
    import csv
    import io

    from ..core.files import csv_safe

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "true", "predicted", score_kind, "loss", "correct"])
    for p in sorted(preds, key=lambda p: (-p.get("loss", 0.0), p["path"])):
        w.writerow([csv_safe(p["path"]), csv_safe(classes[p["true"]]), csv_safe(classes[p["pred"]]),
                    f"{p['score']:.6g}", f"{p['loss']:.6g}" if "loss" in p else "", int(p["pred"] == p["true"])])
    return write_text(Path(run_dir) / PREDICTIONS_CSV, buf.getvalue())


def environment() -> dict:
    """Where a run ran. Names the GPU only when torch is already loaded: a run of a head on codes
    must not import torch just to say it had none."""
    torch = sys.modules.get("torch")
    gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    return {"cpu": processor(), "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch_version}


@dataclass(frozen=True)
class Subject:
    """What a run is of: the method (its description and short name), the data and model it used,
    and where it ran. Every run record starts with these."""

    method: str
    short: str
    stage: str
    dataset: str
    classes: list[str]
    backbone: str
    weights: str
    n_train: int
    n_val: int
    device: str
    seed: int


def record(subject: Subject, val: dict, selection: str, seconds: dict, preds: list[dict], **extra) -> dict:
    """A metrics.json document. `seconds` keys: extract, fit, train, predict (absent = not spent).
    `command` (in `extra`) is the command line that made the run (core.cli.command_line)."""
    s = subject
    return {
        "schema": SCHEMA, "method": s.method, "stage": s.stage, "dataset": s.dataset, "classes": s.classes,
        "backbone": s.backbone, "weights": s.weights, "n_train": s.n_train, "n_val": s.n_val,
        "val": val, "selection": selection, "seconds": seconds, "device": s.device, "seed": s.seed,
        "short": s.short, **extra,
        **({"inputs_digest": json_digest(extra["inputs"])} if "inputs" in extra else {}),
        "environment": environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "predictions": preds,
    }


# ---------------------------------------------------------------------------------------------
# Reading runs back (report)


