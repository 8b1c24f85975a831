"""The report's figures stay readable at 12 methods and 10 classes: no row of panels mostly blank,
one band per label-curve panel, legends clear of the data, suspects under their file names, and no
two rows of the views table named alike. Layouts are read from figures.LAYOUT (display pixels)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_image
from pipeline.report import diagnostics, figures, label_plot, your_data
from pipeline.runs.read import Run

CLASSES = [f"class {i}" for i in range(10)]
NAMES = ["softmax", "linsvc", "linear", "knn", "sgd", "softmax (2 excluded)", "linsvc (2 excluded)",
         "knn (2 excluded)", "softmax (+25 views, TTA 5)", "full FT", "full FT, lr tuned", "frozen, BN eval"]


def _rows_of(boxes: list[dict]) -> list[list[dict]]:
    """Panels grouped into rows: those whose vertical extents overlap (a blank panel is laid out a
    little smaller than a drawn one)."""
    rows: list[list[dict]] = []
    for a in sorted(boxes, key=lambda a: -a["box"][3]):
        row = next((r for r in rows if a["box"][1] < r[0]["box"][3] and r[0]["box"][1] < a["box"][3]), None)
        (row.append(a) if row is not None else rows.append([a]))
    return rows


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("n,k", [(7, 2), (12, 6), (12, 10), (2, 10)])  # the report draws 2 panels past 6 classes
def test_no_row_of_the_confusion_grid_is_mostly_blank(tmp_path, n, k):
    rng = np.random.default_rng(0)
    panels = [(NAMES[i], (np.eye(k, dtype=int) * 9 + rng.integers(0, 2, (k, k))).tolist()) for i in range(n)]
    figures.confusion_grid(panels, CLASSES[:k], tmp_path / "confusion.png")
    grid = [a for a in figures.LAYOUT["confusion.png"]["axes"] if not a["colorbar"]]
    rows = _rows_of(grid)
    assert sum(a["on"] for a in grid) == n
    for row in rows:
        assert 2 * sum(a["on"] for a in row) >= len(row), [len(r) for r in rows]
    for n_panels in range(1, 13):  # every count: the last row at least half full
        r, c, _ = figures._grid(n_panels, 1.8, 6)
        assert r * c >= n_panels and 2 * (n_panels - (r - 1) * c) >= c


def test_label_curves_of_many_heads_get_a_panel_each_with_one_band(tmp_path):
    def curve(name, level):
        rows = [{"per_class": s, "mean": level + 0.01 * s, "accuracy": [level, level + 0.02 * s, level + 0.05]}
                for s in (1, 2, 5, 10)]
        return {"name": name, "rows": rows, "full": {"per_class": 20, "accuracy": level + 0.1}, "draws": 3,
                "chance": {"accuracy": 0.1, "what": "always the most common class"}}
    few = [curve(n, 0.5 + 0.01 * i) for i, n in enumerate(NAMES[:3])]
    label_plot.label_efficiency(few, tmp_path / "few.png")
    assert len(figures.LAYOUT["few.png"]["axes"]) == 1  # up to ONE_PANEL_MOST: one panel, heads side by side
    many = [curve(n, 0.5 + 0.01 * i) for i, n in enumerate(NAMES[:9])]
    label_plot.label_efficiency(many, tmp_path / "many.png")
    layout = figures.LAYOUT["many.png"]
    drawn = [a for a in layout["axes"] if a["on"]]
    assert len(drawn) == 9 and all(a["bands"] == 1 for a in drawn)
    for row in _rows_of(layout["axes"]):
        assert 2 * sum(a["on"] for a in row) >= len(row)
    assert all(not _overlap(lg, a["box"]) for lg in layout["legends"] for a in drawn)


def test_the_calibration_legend_covers_no_data(tmp_path):
    def bins(shift):
        return [{"lo": lo, "hi": lo + 0.1, "confidence": lo + 0.05, "accuracy": min(1.0, lo + shift), "n": 10}
                for lo in np.arange(0.5, 1.0, 0.1)]
    curves = [{"name": NAMES[0], "bins": bins(0.0), "ece": 0.02}, {"name": NAMES[9], "bins": bins(0.1), "ece": 0.1}]
    figures.reliability_diagram(curves, tmp_path / "calibration.png")
    layout = figures.LAYOUT["calibration.png"]
    assert layout["legends"] and all(not _overlap(lg, a["box"]) for lg in layout["legends"] for a in layout["axes"])


def test_the_audits_suspects_are_shown_under_their_file_names(tmp_path, monkeypatch):
    for i in range(3):
        make_image(tmp_path / "data" / "train" / "ants" / f"IMG_{i}_a_rather_long_camera_file_name.jpg", (200, 40, 40))
    drawn = {}
    monkeypatch.setattr(figures, "image_grid", lambda items, *a, **k: drawn.setdefault("items", items) and None)
    suspects = [{"path": f"train/ants/IMG_{i}_a_rather_long_camera_file_name.jpg", "label": "ants",
                 "suggested": "bees" if i else "ants"} for i in range(3)]
    your_data._suspects_grid(suspects, tmp_path / "data", tmp_path)
    captions = [c for _, c in drawn["items"]]
    assert all(c.startswith(f"IMG_{i}_") and "…" in c.split("\n")[0] for i, c in enumerate(captions))
    assert captions[1].endswith("ants → bees") and captions[0].endswith("ants (outlier)")
    assert your_data._file_name("train/ants/short.jpg") == "short.jpg"


def test_the_views_table_never_names_two_rows_alike(tmp_path):
    def run(slug, head, views=0, tta=1, exclude=()):
        m = {"head": head, "views": views, "tta": tta, "inputs": {"exclude": list(exclude)} if exclude else {}}
        return Run(tmp_path / slug, slug, m, None)
    runs = [run("a", "linsvc"), run("b", "linsvc", exclude=("x.jpg", "y.jpg")), run("c", "linsvc", 25, 5),
            run("d", "linsvc", 25, 5, exclude=("x.jpg", "y.jpg")), run("e", "knn")]
    names = ["linsvc", "linsvc (2 excluded)", "linsvc (+25 views, TTA 5)", "linsvc (+25 views, TTA 5, 2 excluded)",
             "knn"]
    rows = [{"kind": "ours", "stage": "classify", "run": r.slug, "name": n, "accuracy": 0.9, "accuracy_ci95_lo": 0.8,
             "accuracy_ci95_hi": 0.95, "extract_s": 1.0, "total_s": 2.0} for r, n in zip(runs, names)]
    table = diagnostics.views_table(runs, rows)
    first = [c[0] for c in table.rows]
    assert len(first) == 4 and len(set(first)) == 4 and "knn" not in first  # knn has one setting: no rows
