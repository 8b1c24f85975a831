"""The report's smaller tables, from the table rows: the main (decision) table, the best-epoch and
published rows apart, what each method costs to make and to use, what each method is, and the
most-confused class pairs. Pure functions; rows.py makes the rows and the full quality table.
"""
from __future__ import annotations

from .blocks import Table, md_text
from .rows import DASH, LegendEntry, fmt_acc, fmt_pct, fmt_seconds
from .usage import fmt_count, fmt_ms

STAR = "★"  # marks the recommended method, in both renderings


def method_cell(row: dict, rec_run: str | None) -> str:
    """The method's name, starred when recommended, and marked when a fine-tune stopped short of the recipe."""
    name = f"{STAR} {row['name']}" if row["run"] == rec_run and row["kind"] == "ours" else row["name"]
    return f"{name} (**stopped short: {row['short_of_recipe']}**)" if row.get("short_of_recipe") else name


def ms_cell(row: dict) -> str:
    ms = row.get("ms_per_image")
    if ms is None:
        return "not recorded"
    tta = row.get("tta") or 1
    return fmt_ms(ms) + (f" ({tta} views)" if tta > 1 else "") + ("" if row.get("ms_measured", True) else " (est.)")


def main_table(rows: list[dict], standing: dict[str, str], rec_run: str | None) -> Table:
    """One row per method of ours, best first, the recommended starred (and classed for the HTML)."""
    ours = [r for r in rows if r["kind"] == "ours"]
    test = any(r.get("test_accuracy") is not None for r in ours)  # a test split: its column beside val's
    again = any(r.get("repeats") for r in ours)  # classify/finetune --repeats: the spread over re-drawn splits
    cells = [[method_cell(r, rec_run), fmt_acc(r), *([test_cell(r)] if test else []),
              *([repeats_cell(r)] if again else []), standing.get(r["run"], DASH),
              fmt_seconds(r["total_s"]), ms_cell(r), (r["selection"] or DASH)] for r in ours]
    return Table(["Method", "Val accuracy [95% CI]", *(["Test accuracy [95% CI]"] if test else []),
                  *(["Re-drawn splits, mean ± sd"] if again else []), "Against the best", "Compute s", "ms / image",
                  "Chosen by"],
                 cells, "lr" + "r" * test + "r" * again + "lrrl",
                 ["recommended" if r["run"] == rec_run else "" for r in ours])


def repeats_cell(row: dict) -> str:
    """'95.7% ± 0.9 (5)': the mean and sd of the accuracy over classify or finetune --repeats re-drawn
    splits (the same draws for both)."""
    r = row.get("repeats")
    if not r:
        return DASH
    return f"{fmt_pct(r['mean'])} ± {100 * r['sd']:.1f} ({r['repeats']})"


def test_cell(row: dict) -> str:
    """The test split's accuracy with its Wilson interval, and without the test images that leaked
    (a near-copy in train, from the audit) where some did; a dash for a run without one."""
    if row.get("test_accuracy") is None:
        return DASH
    cell = f"{fmt_pct(row['test_accuracy'])} [{100 * row['test_ci95_lo']:.1f}, {100 * row['test_ci95_hi']:.1f}]"
    if row.get("test_leaks"):  # the audit found copies of test images in train: not unseen
        cell += f" **{row['test_leaks']} leaked; {fmt_pct(row['test_accuracy_without_leaks'])} without**"
    return cell


def epoch_table(rows: list[dict]) -> Table:
    """The best-epoch-on-val rows of ours and the published numbers: chosen on val, so apart."""
    last = {r["run"]: r for r in rows if r["kind"] == "ours"}
    apart = [r for r in rows if r["kind"] != "ours"]
    if not apart:
        return Table([], [], "")
    cells = [[r["name"], fmt_acc(r), fmt_pct(last[r["run"]]["accuracy"]) if r["run"] in last else DASH,
              r.get("settings") or DASH, "published, not our run" if r["is_reference"] else "best epoch on val"]
             for r in apart]
    return Table(["Method", "Val accuracy [95% CI]", "Its last epoch", "Settings", "Chosen by"], cells, "lrrll",
                 [r["kind"].replace("_", "-") for r in apart])


def _params(row: dict) -> str:
    n, note = row.get("trained_params"), row.get("params_note") or ""
    if n is None:
        return "not recorded" + (f" ({note.removesuffix('; not recorded')})" if note else "")
    return fmt_count(n) + (f" ({note})" if note else "")


def cost_table(rows: list[dict]) -> Table:
    """What each method of ours cost to make (seconds) and costs to use (per image, parameters)."""
    ours = [r for r in rows if r["kind"] == "ours"]
    cells = [[r["name"], fmt_seconds(r["extract_s"]), fmt_seconds(r["fit_s"] if r["fit_s"] is not None
                                                                    else r["train_s"]),
              fmt_seconds(r["total_s"]), ms_cell(r), str(r.get("tta") or 1), _params(r),
              DASH if r.get("code_dim") is None else str(r["code_dim"])] for r in ours]
    return Table(["Method", "Extract s", "Fit / train s", "Compute s", "ms / image", "Test-time views",
                  "Trained parameters", "Code dim"], cells, "lrrrrrrr")


def legend_table(legend: list[LegendEntry]) -> Table:
    return Table(["Method", "What it is"], [[e.name, e.description] for e in legend], "ll")


COLUMN_NOTES = [
    "*Val accuracy*: on the val images, with a 95% Wilson interval.",
    "*Against the best*: exact McNemar test on the val images both scored, Holm-corrected over every method "
    "compared with the best; *within noise* means these images cannot tell the two apart.",
    "*Compute s*: what making the model cost: extracting the codes (shared by every head on one codes file) and "
    f"fitting with CV, or fine-tuning with its image decoding and per-epoch val pass; {DASH} = not recorded.",
    "*ms / image*: what using it costs, per new image, on the machine that made the run, measured by one harness "
    "for every method: the model's pass on a warm batch of 32 decoded crops (2 untimed calls, then the median of 5), "
    "per image, decoding and resizing left out. A head costs its backbone pass (times the test-time views: TTA with "
    "T views costs T times) plus its head on the codes; a fine-tune its whole network, as predict runs it. Runs of "
    "the same network share one figure (the median of their measurements), so identical models cost the same. "
    "*(est.)*: a run made before the harness, estimated from its own extraction and val pass.",
    "*Chosen by*: CV on train and the last epoch never look at val; the best-epoch rows did, so they stand apart.",
    "*ECE*: expected calibration error, 15 equal-width bins of the predicted class's probability (0 = confidence "
    "matches accuracy); a head that gives margins, not probabilities (LinearSVC), has none.",
    "*Trained parameters*: what the head (or the fine-tune) learned, read from model.npz or derived from the code "
    "dimension; a k-NN learns nothing and keeps the training codes; the frozen backbone's are not recorded.",
    "metrics.csv has every column, per_class.csv every class.",
]


def confused_table(pairs: list[tuple[int, int, list[int]]], names: list[str], classes: list[str],
                   support: list[int]) -> Table:
    """The most-confused (true, predicted) pairs with each method's count and its share of the class."""
    if not pairs:
        return Table([], [], "")
    cls = lambda i: md_text(classes[i]) if 0 <= i < len(classes) else str(i)  # noqa: E731
    cells = [[cls(t), cls(p), *(f"{n} ({n / support[t]:.0%})" if support[t] else str(n) for n in counts)]
             for t, p, counts in pairs]
    return Table(["True class", "Predicted as", *(md_text(n) for n in names)], cells, "ll" + "r" * len(names))
