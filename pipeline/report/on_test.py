"""The test split's numbers of each run (scored once by its final model, never used for a choice),
flagged where they stand for less than they seem: test images with a near-copy in train (from an
audit of the same codes: duplicates.csv) are not unseen, so the score without them is given beside
it; and a fine-tune stopped short of the recipe's epochs is no verdict on fine-tuning.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..core.files import csv_unsafe
from ..runs.metrics import wilson

# The tutorial's recipe (finetune's default --epochs, the published numbers' protocol): a fine-tune
# run for fewer epochs is marked wherever its score stands (tests/test_report_on_test.py checks
# it against the finetune stage's default).
RECIPE_EPOCHS = 25
TEST_COLUMNS = ["n_test", "test_correct", "test_accuracy", "test_ci95_lo", "test_ci95_hi", "test_balanced_accuracy",
                "test_macro_f1", "test_log_loss", "test_leaks", "n_test_without_leaks", "test_correct_without_leaks",
                "test_accuracy_without_leaks", "test_without_leaks_ci95_lo", "test_without_leaks_ci95_hi"]


def numbers_on_test(t: dict | None) -> dict:
    """The test split's numbers of a run's row, None where there is none."""
    if not isinstance(t, dict) or not t.get("n"):
        return {**dict.fromkeys(TEST_COLUMNS), "test_per_class": None, "test_confusion": None}
    lo, hi = t.get("accuracy_ci95") or wilson(t["correct"], t["n"])
    return {**dict.fromkeys(TEST_COLUMNS), "test_accuracy": t.get("accuracy"), "test_correct": t.get("correct"),
            "n_test": t["n"], "test_ci95_lo": lo, "test_ci95_hi": hi,
            "test_balanced_accuracy": t.get("balanced_accuracy"), "test_macro_f1": t.get("macro_f1"),
            "test_log_loss": t.get("log_loss"), "test_per_class": t.get("per_class"),
            "test_confusion": t.get("confusion")}


def short_of_recipe(m: dict) -> str | None:
    """'2 of the recipe's 25 epochs' for a fine-tune run for fewer epochs than the recipe; else None."""
    if m.get("stage") != "finetune":
        return None
    epochs = (m.get("hyperparameters") or {}).get("epochs", m.get("epochs"))
    if not isinstance(epochs, int) or epochs >= RECIPE_EPOCHS:
        return None
    return f"{epochs} of the recipe's {RECIPE_EPOCHS} epochs"


def read_audit_csv(path: Path) -> list[dict]:
    """The rows of one of the audit's CSV files, its spreadsheet escapes undone; [] when absent."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: csv_unsafe(v) if isinstance(v, str) else v for k, v in r.items()} for r in csv.DictReader(fh)]


def leaked_test_paths(audit: Path | str | None, train: str = "train", test: str = "test") -> dict[str, set[str]]:
    """The test images the audit found a near-copy of in train (duplicates.csv pairs across the two
    splits), each with its copies in train."""
    pairs = read_audit_csv(Path(audit) / "duplicates.csv") if audit else []
    out: dict[str, set[str]] = {}
    for r in pairs:
        if {r.get("split"), r.get("other_split")} == {train, test}:
            t, c = (r["path"], r["other"]) if r["split"] == test else (r["other"], r["path"])
            out.setdefault(t, set()).add(c)
    return out


def flag_leaks(rows: list[dict], runs: list, audit: Path | str | None) -> int:
    """Add to each row of ours with test predictions how many of its test images leaked (a copy in
    its training images: a run made with --exclude that left every copy out has none) and its test
    score without them. Returns how many test images the audit found leaked (0: no audit, or none)."""
    leaked = leaked_test_paths(audit)
    if not leaked:
        return 0
    by_slug = {r.slug: r for r in runs}
    for row in rows:
        m = by_slug[row["run"]].m if row["kind"] == "ours" else {}
        preds = m.get("test_predictions")
        if not preds or row.get("test_accuracy") is None:
            continue
        gone = set((m.get("inputs") or {}).get("exclude") or [])
        mine = {t for t, copies in leaked.items() if copies - gone}
        kept = [p for p in preds if p["path"] not in mine]
        k, n = sum(p["pred"] == p["true"] for p in kept), len(kept)
        lo, hi = wilson(k, n) if n else (None, None)
        row.update({"test_leaks": len(preds) - n, "n_test_without_leaks": n, "test_correct_without_leaks": k,
                    "test_accuracy_without_leaks": k / n if n else None, "test_without_leaks_ci95_lo": lo,
                    "test_without_leaks_ci95_hi": hi})
    return len(leaked)
