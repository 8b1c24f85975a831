"""A run folder: what classify and finetune write, and predict and report read.

RUNS/<run>/ holds
  model.json    how to rebuild the model: kind (head | finetune), backbone, weights, classes,
                resize/crop, and `file`, the model file beside it
  model.joblib  a classify head (a fitted sklearn Pipeline), or final.pt / best.pt (state_dicts)
  metrics.json  the run record, schema cnncodes-metrics/1 (see `record`)
  history.json  per-epoch log of a fine-tune
A (re)run removes the old model.json and metrics.json first and writes them last, each atomically:
a folder holding both is a complete run, never a mix of two.
"""
from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import UserError
from .files import atomic_write, read_json, write_json

SCHEMA = "cnncodes-metrics/1"
RECORDS = ("metrics.json", "model.json")


def run_name(*parts: str) -> str:
    """A folder name from its parts (dataset, backbone, weights tag, method), safe on any filesystem."""
    return "-".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-.") or "x" for p in parts)


def start(run_dir: Path | str) -> Path:
    """Make the folder and remove a previous run's records: they are written again, last."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in RECORDS:
        (run_dir / stale).unlink(missing_ok=True)
    return run_dir


def save_joblib(path: Path, obj) -> Path:
    import joblib

    return atomic_write(path, lambda fh: joblib.dump(obj, fh))


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


def load_head(run_dir: Path | str, spec: dict):
    import joblib

    return joblib.load(Path(run_dir) / spec["file"])


def predictions(paths: list[str], y_true, y_pred, score) -> list[dict]:
    """Per-image val predictions: what the report's image grid and paired tests need."""
    return [
        {"path": p, "true": int(t), "pred": int(q), "score": float(s)}
        for p, t, q, s in zip(paths, y_true, y_pred, score)
    ]


def cpu_model() -> str:
    """The CPU's marketing name (platform.processor() is often empty or just the architecture)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Where a run ran. Names the GPU only when torch is already loaded: a run of a head on codes
    must not import torch just to say it had none."""
    torch = sys.modules.get("torch")
    gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch_version}


def record(*, method: str, stage: str, dataset: str, classes: list[str], backbone: str, weights: str,
           n_train: int, n_val: int, val: dict, selection: str, seconds: dict, device: str, seed: int,
           preds: list[dict], **extra) -> dict:
    """A metrics.json document. `seconds` keys: extract, fit, train, predict (absent = not spent)."""
    return {
        "schema": SCHEMA, "method": method, "stage": stage, "dataset": dataset, "classes": classes,
        "backbone": backbone, "weights": weights, "n_train": n_train, "n_val": n_val,
        "val": val, "selection": selection, "seconds": seconds, "device": device, "seed": seed,
        **extra,
        "environment": environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "predictions": preds,
    }


# ---------------------------------------------------------------------------------------------
# Reading runs back (report)


@dataclass
class Run:
    dir: Path  # the run folder, which holds metrics.json
    slug: str  # unique, filesystem-safe name for this run's figures
    m: dict  # the metrics.json document
    history: list[dict] | None  # per-epoch log of a fine-tuning run


def _history(run_dir: Path, m: dict) -> list[dict] | None:
    h = m.get("history")
    if isinstance(h, list):  # inlined by the writer
        return h or None
    f = run_dir / (h if isinstance(h, str) and h else "history.json")
    if f.is_file():
        doc = read_json(f, "history file")
        return doc if isinstance(doc, list) and doc else None
    return None


def load_runs(runs_dir: Path | str) -> list[Run]:
    """Every metrics.json under runs_dir (sorted by path), with its history; UserError when none."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"runs folder {str(runs_dir)!r} does not exist (run `make classify` or `make finetune` first)")
    files = sorted(runs_dir.rglob("metrics.json"))
    if not files:
        raise UserError(f"no metrics.json under {str(runs_dir)!r} (run `make classify` or `make finetune` first)")
    runs, used = [], set()
    for f in files:
        m = read_json(f, "run record")
        if not isinstance(m, dict) or m.get("schema") != SCHEMA:
            found = m.get("schema") if isinstance(m, dict) else type(m).__name__
            raise UserError(f"{str(f)!r} is not a run record of schema {SCHEMA} (found {found!r})")
        rel = f.parent.relative_to(runs_dir).as_posix()
        slug = base = run_name(rel if rel != "." else runs_dir.resolve().name)
        i = 2
        while slug in used:  # two folders that differ only in unsafe characters
            slug, i = f"{base}-{i}", i + 1
        used.add(slug)
        runs.append(Run(f.parent, slug, m, _history(f.parent, m)))
    return runs


def check_one_dataset(runs: list[Run]) -> str:
    """The one dataset all runs share; UserError naming the datasets when they differ, since rows
    scored on different val sets cannot sit in one table."""
    groups: dict[tuple, list[str]] = {}
    for r in runs:
        groups.setdefault((r.m.get("dataset"), tuple(r.m.get("classes") or ())), []).append(r.slug)
    if len(groups) > 1:
        names = {d for d, _ in groups}
        if len(names) > 1:
            desc = "; ".join(f"{d!r} ({len(s)} run{'s' * (len(s) > 1)}: {', '.join(s[:3])}{', ...' * (len(s) > 3)})"
                             for (d, _), s in groups.items())
            raise UserError(f"runs come from different datasets: {desc}; point --runs at one dataset's folder")
        desc = "; ".join(f"{list(c)} in {', '.join(s[:3])}" for (_, c), s in groups.items())
        raise UserError(
            f"runs of dataset {next(iter(names))!r} have different class lists: {desc}; "
            "point --runs at runs of one data version"
        )
    return runs[0].m.get("dataset")
