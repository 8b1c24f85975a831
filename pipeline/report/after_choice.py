"""The report's "The test split, after the choice" section: every method's numbers on the test
split, per class, the recommended method's test confusion and its test mistakes as thumbnails. Val
made every choice before these were read; nothing here feeds back into the verdict.
"""
from __future__ import annotations

from pathlib import Path

from ..runs.read import Run, existing
from .blocks import Block, FigureFile, Table, md_text
from .diagnostics import per_class_table
from .gallery import loss_caption, score_kind
from .quality import most_confused
from .rows import DASH, fmt_pct
from .tables import confused_table, test_cell

MISTAKES = 10  # test mistakes drawn, highest loss first
FULL_MATRIX = 12  # up to this many classes the whole confusion is shown; past it, the most confused pairs


def test_split_section(rows: list[dict], runs: list[Run], rec: dict, figdir: Path) -> list[Block]:
    """The section's blocks; [] when no run scored a test split."""
    ours = [r for r in rows if r["kind"] == "ours" and r.get("test_accuracy") is not None]
    if not ours:
        return []
    classes = list(runs[0].m.get("classes") or [])
    blocks = [Block("h2", "The test split, after the choice"),
              Block("p", "Val chose each method's place and the recommendation; the test split was scored once by "
                         "each run's final model and is shown only here and in the verdict's last numbers, never "
                         "used for a choice." + (" Leaked: test images the audit found a near-copy of in train; "
                                                 "the score without them is beside it." if any(
                                                     r.get("test_leaks") for r in ours) else "")),
              Block("table", _numbers(ours))]
    per_class = per_class_table([{**r, "per_class": r.get("test_per_class")} for r in ours], classes)
    if per_class.headers:
        blocks += [Block("details", "Precision, recall and F1 of every class on test"), Block("table", per_class)]
    if rec.get("test_confusion"):
        blocks += [Block("details", f"Confusion of {md_text(rec['name'])} (recommended) on test"),
                   Block("table", _confusion(rec["test_confusion"], classes, rec["name"]))]
    grid = _mistakes(next((r for r in runs if r.slug == rec["run"]), None), rec, classes, figdir)
    return blocks + ([Block("figure", grid)] if grid else [])


def _numbers(ours: list[dict]) -> Table:
    cells = [[md_text(r["name"]), test_cell(r), fmt_pct(r.get("test_balanced_accuracy")),
              DASH if r.get("test_macro_f1") is None else f"{r['test_macro_f1']:.3f}",
              DASH if r.get("test_log_loss") is None else f"{r['test_log_loss']:.3f}"] for r in ours]
    return Table(["Method", "Test accuracy [95% CI]", "Balanced acc.", "Macro F1", "Log-loss"], cells, "lrrrr")


def _confusion(cm: list[list[int]], classes: list[str], name: str) -> Table:
    """The whole matrix (rows: true class, columns: predicted) up to FULL_MATRIX classes; past it,
    the most confused pairs."""
    cls = lambda i: md_text(classes[i]) if i < len(classes) else str(i)  # noqa: E731
    if len(cm) > FULL_MATRIX:
        return confused_table(most_confused([cm]), [name], classes, [sum(row) for row in cm])
    return Table(["True ↓ / predicted →", *(cls(j) for j in range(len(cm)))],
                 [[cls(i), *map(str, row)] for i, row in enumerate(cm)], "l" + "r" * len(cm))


def _mistakes(run: Run | None, rec: dict, classes: list[str], figdir: Path) -> FigureFile | None:
    """Thumbnails of the recommended method's test mistakes, highest loss first."""
    wrong = sorted((p for p in (run.m.get("test_predictions") or []) if p["pred"] != p["true"]),
                   key=lambda p: (-p.get("loss", 0.0), p["path"])) if run else []
    root = existing(run.m.get("data_root"), run) if run else None
    if not wrong or root is None or not root.is_dir():
        return None
    from . import figures

    kind = score_kind(run)
    path = figures.image_grid([(p, loss_caption(p, classes, kind)) for p in wrong[:MISTAKES]], root,
                              f"{rec['name']} (recommended): test mistakes", figdir / f"test-mistakes-{run.slug}.png")
    if path is None:
        return None
    more = f"; the first {MISTAKES} shown" if len(wrong) > MISTAKES else ""
    return FigureFile(path.name, f"The test images **{md_text(rec['name'])}** (recommended) gets wrong "
                                 f"({len(wrong)} in all{more}), highest loss first, with the predicted class and its "
                                 f"{kind}. Shown after the choice: val chose.")
