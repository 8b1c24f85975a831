"""Reading runs back (report): every run record under a folder, checked field by field and
against its own predictions, so the report shows only what adds up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.files import read_json
from .folder import SCHEMA, run_name


@dataclass
class Run:
    dir: Path  # the run folder, which holds metrics.json
    slug: str  # unique, filesystem-safe name for this run's figures
    m: dict  # the metrics.json document
    history: list[dict] | None  # per-epoch log of a fine-tuning run


def existing(path_str, run: Run) -> Path | None:
    """A path recorded in a run, as given (relative to where the stage ran) or relative to the run."""
    if not path_str:
        return None
    p = Path(path_str)
    for c in (p, run.dir / p) if not p.is_absolute() else (p,):
        if c.exists():
            return c
    return None


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
    files = sorted(f for f in runs_dir.rglob("metrics.json")  # not the hidden folders of unfinished runs
                   if not any(part.startswith(".") for part in f.relative_to(runs_dir).parts))
    if not files:
        raise UserError(f"no metrics.json under {str(runs_dir)!r} (run `make classify` or `make finetune` first)")
    runs, used = [], set()
    for f in files:
        m = read_json(f, "run record")
        if not isinstance(m, dict) or m.get("schema") != SCHEMA:
            found = m.get("schema") if isinstance(m, dict) else type(m).__name__
            raise UserError(f"{str(f)!r} is not a run record of schema {SCHEMA} (found {found!r})")
        check_record(m, f)
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


def _scores_consistent(v: dict, what: str) -> str | None:
    """Why an evaluation block contradicts itself, or None."""
    from ..runs.metrics import wilson

    k, n, acc = v.get("correct"), v.get("n"), v.get("accuracy")
    if not (isinstance(k, int) and isinstance(n, int) and isinstance(acc, (int, float))) or not 0 <= k <= n:
        return f"{what}: correct, n and accuracy must be numbers with 0 <= correct <= n"
    if n and abs(acc - k / n) > 1e-9:
        return f"{what}: accuracy {acc} is not correct/n = {k}/{n}"
    ci = v.get("accuracy_ci95")
    if ci is not None and (len(ci) != 2 or any(abs(a - b) > 1e-6 for a, b in zip(ci, wilson(k, n)))):
        return f"{what}: 95% interval {ci} is not the Wilson interval of {k}/{n}"
    return None


def check_record(m: dict, f: Path) -> None:
    """Refuse a run record with a field missing or of the wrong type, or whose numbers contradict
    each other or its saved predictions: the report shows only what adds up."""
    def refuse(why: str):
        raise UserError(f"run record {str(f)!r} is inconsistent: {why}; refused")

    for key, kind in (("method", str), ("stage", str), ("classes", list), ("val", dict)):
        if not isinstance(m.get(key), kind):
            refuse(f"{key!r} is missing or not a {kind.__name__}")
    for what, block in (("val", m["val"]), ("best_val", m.get("best_val"))):
        if block is not None:
            why = _scores_consistent(block, what) if isinstance(block, dict) else f"{what!r} is not an object"
            if why:
                refuse(why)
    preds = m.get("predictions")
    if preds is not None:
        if not isinstance(preds, list) or not all(isinstance(p, dict) and {"pred", "true", "path"} <= p.keys()
                                                  for p in preds):
            refuse("'predictions' is not a list of {path, true, pred}")
        right = sum(p["pred"] == p["true"] for p in preds)
        if (len(preds), right) != (m["val"]["n"], m["val"]["correct"]):
            refuse(f"its {len(preds)} saved predictions hold {right} correct, the record says "
                   f"{m['val']['correct']} of {m['val']['n']}")
