"""What the report shows beyond the main table, from the saved runs: per-class metrics, the
images with the highest loss, the images every method gets wrong, and the label-efficiency table.
Pure functions of the loaded runs and table rows; `build` draws and writes.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..core.files import csv_safe, write_text
from ..runs.read import Run
from .blocks import AlwaysWrong, Table, md_text
from .rows import DASH, fmt_pct


def per_class_table(rows: list[dict], classes: list[str]) -> Table:
    """Precision / recall / F1 of every class for every method (rows of ours, in table order). With
    up to 6 classes one row per method and a column per class; with more, one row per (method,
    class), so the table never grows sideways."""
    ours = [r for r in rows if r["kind"] == "ours" and r.get("per_class")]
    if not ours:
        return Table([], [], "")
    support = ours[0]["per_class"]
    if len(classes) <= 6:
        headers = ["Method", *(f"{md_text(c)} (n={support.get(c, {}).get('support', '?')}): P / R / F1"
                               for c in classes)]
        cells = [[md_text(r["name"]), *(_prf(r["per_class"].get(c)) for c in classes)] for r in ours]
        return Table(headers, cells, "l" + "r" * len(classes))
    headers = ["Method", "Class", "Support", "Precision", "Recall", "F1"]
    cells = [[md_text(r["name"]), md_text(c), str(v.get("support", DASH)),
              *(f"{v[k]:.3f}" for k in ("precision", "recall", "f1"))]
             for r in ours for c, v in r["per_class"].items()]
    return Table(headers, cells, "llrrrr")


def _prf(v: dict | None) -> str:
    return DASH if not v else f"{v['precision']:.3f} / {v['recall']:.3f} / {v['f1']:.3f}"


def write_per_class_csv(rows: list[dict], path: Path) -> Path:
    """per_class.csv: method, class, precision, recall, f1, support and split (val, then test where a
    run scored one), for every run (names through `csv_safe`: a spreadsheet never runs one as a
    formula; the numbers stay numbers)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "name", "kind", "class", "precision", "recall", "f1", "support", "split"])
    for split, key in (("val", "per_class"), ("test", "test_per_class")):
        for r in rows:
            for c, v in (r.get(key) or {}).items():
                w.writerow([csv_safe(r["run"]), csv_safe(r["name"]), r["kind"], csv_safe(c), v["precision"],
                            v["recall"], v["f1"], v["support"], split])
    return write_text(path, buf.getvalue())


def top_losses(run: Run, n: int = 10) -> list[dict]:
    """The run's val images with the highest loss (mistakes made with confidence, then right
    answers given without it); runs recorded before losses were saved: mistakes, most confident first."""
    preds = run.m.get("predictions") or []
    if preds and all("loss" in p for p in preds):
        return sorted(preds, key=lambda p: (-p["loss"], p["path"]))[:n]
    return sorted((p for p in preds if p["pred"] != p["true"]), key=lambda p: (-p["score"], p["path"]))[:n]


def always_wrong(runs: list[Run], rows: list[dict]) -> AlwaysWrong:
    """The methods compared and the val images that every one of them gets wrong, each with its
    true class and what each method predicted. Only images scored by every run count."""
    ours = [r for r in rows if r["kind"] == "ours"]
    by_slug = {r.slug: r for r in runs}
    preds = [{p["path"]: p for p in by_slug[r["run"]].m.get("predictions") or []} for r in ours]
    if not preds or not all(preds):
        return AlwaysWrong([], [])
    common = set.intersection(*(set(p) for p in preds))
    wrong = sorted(path for path in common if all(p[path]["pred"] != p[path]["true"] for p in preds))
    return AlwaysWrong([r["name"] for r in ours], [{"path": path, "true": preds[0][path]["true"],
                                                    "pred": [p[path]["pred"] for p in preds]} for path in wrong])


def label_curves(runs: list[Run], rows: list[dict]) -> list[dict]:
    """{name, rows, draws, seconds, full, chance} per run with a label curve, in table order; `full`
    is the run's own point (every training image) as {per_class, accuracy}; `chance`, the accuracy
    of always answering val's most common class, as {accuracy, what} (None without val's counts)."""
    by_slug = {r.slug: r for r in runs}
    out = []
    for row in (r for r in rows if r["kind"] == "ours"):
        curve = by_slug[row["run"]].m.get("label_curve")
        if isinstance(curve, dict) and curve.get("rows"):
            n, k = row["n_train"], len(row.get("per_class") or {}) or 1
            support = [c.get("support") or 0 for c in (row.get("per_class") or {}).values()]
            out.append({"name": row["name"], "rows": curve["rows"], "draws": curve.get("draws"),
                        "seconds": curve.get("seconds"),
                        "full": {"per_class": (n / k) if n else None, "n_train": n, "accuracy": row["accuracy"]},
                        "chance": {"accuracy": max(support) / sum(support), "what": "always val's majority class"}
                        if sum(support) else None})
    return out


def label_table(curves: list[dict]) -> Table:
    """Mean val accuracy ± standard deviation over the draws (the header says so), one row per
    training size, one column per head; the last row is every training image (one run, no spread)."""
    if not curves:
        return Table([], [], "")
    sizes = sorted({r["per_class"] for c in curves for r in c["rows"]})
    draws = curves[0].get("draws")
    headers = [f"Train images per class (val accuracy, mean ± sd over {f'{draws} ' if draws else 'the '}draws)",
               *(c["name"] for c in curves)]
    cells = []
    for size in sizes:
        row = [str(size)]
        for c in curves:
            r = next((r for r in c["rows"] if r["per_class"] == size), None)
            row.append(DASH if r is None else f"{100 * r['mean']:.1f}% ± {100 * r['std']:.1f}")
        cells.append(row)
    n = curves[0]["full"]["n_train"]
    cells.append([f"all ({n} images)" if n else "all", *(fmt_pct(c["full"]["accuracy"]) for c in curves)])
    return Table(headers, cells, "l" + "r" * len(curves))


def views_table(runs: list[Run], rows: list[dict]) -> Table:
    """What cached views buy: for every head run with more than one (views, TTA) setting, val
    accuracy and the compute it cost (the extraction share included) per setting."""
    by_slug = {r.slug: r for r in runs}
    groups: dict[tuple, list[tuple[int, int, dict]]] = {}
    for row in (r for r in rows if r["kind"] == "ours" and r["stage"] == "classify"):
        m = by_slug[row["run"]].m
        # a head on fewer images (--exclude) is another model: its own group, never a second "linsvc" row
        key = (m.get("head") or row["name"], tuple((m.get("inputs") or {}).get("exclude") or m.get("exclude") or ()))
        groups.setdefault(key, []).append((m.get("views", 0), m.get("tta", 1), row))
    groups = {h: sorted(g, key=lambda x: x[:2]) for h, g in groups.items() if len({x[:2] for x in g}) > 1}
    if not groups:
        return Table([], [], "")
    cells = [[r["name"], str(k), str(t), f"{100 * r['accuracy']:.1f}% [{100 * r['accuracy_ci95_lo']:.1f}, "
              f"{100 * r['accuracy_ci95_hi']:.1f}]", DASH if r["extract_s"] is None else f"{r['extract_s']:.1f}",
              DASH if r["total_s"] is None else f"{r['total_s']:.1f}"]
             for g in groups.values() for k, t, r in g]
    return Table(["Method", "Train views", "TTA views", "Val accuracy [95% CI]", "Extract s", "Compute s"], cells,
                 "lrrrrr")
