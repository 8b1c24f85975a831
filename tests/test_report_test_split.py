"""The test split in the report: leaks into test flagged where the score stands (with the score
without them), fine-tunes stopped short of the recipe marked in the first table and the verdict,
and the test split shown in full after the choice (metrics.csv, per_class.csv, confusion, mistakes).
Synthetic runs, CPU, a few seconds, no torch."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import make_image
from pipeline.report import on_test
from pipeline.runs import folder as runfiles
from pipeline.runs import metrics
from pipeline.stages import report
from test_report import CLASSES, VAL, Y, fake_env, wrong_at, write_run

TEST = [f"test/{c}/t{i:03d}.jpg" for c in CLASSES for i in range(15)]
YT = [0] * 15 + [1] * 15


def _test_block(wrong: list[int]) -> dict:
    pred = list(YT)
    for i in wrong:
        pred[i] = 1 - pred[i]
    return {"test": metrics.scores(YT, pred, CLASSES),
            "test_predictions": runfiles.predictions(TEST, YT, pred, [0.9] * len(YT), [0.2] * len(YT))}


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    root = tmp_path / "runs"
    # the recommended head: wrong on 2 test images, neither of them leaked
    write_run(root / "softmax", method="codes + softmax", short="softmax", stage="classify", pred=list(Y),
              seconds={"fit": 1.0}, selection="CV", data_root=str(tmp_path / "data"), **_test_block([3, 20]))
    write_run(root / "ft", method="full fine-tuning", short="full FT", stage="finetune", pred=wrong_at(range(8)),
              seconds={"train": 50.0}, selection="last epoch", hyperparameters={"epochs": 2, "lr": 0.001},
              **_test_block([1, 2, 3]))
    for p in TEST:  # thumbnails of the test mistakes
        make_image(tmp_path / "data" / p, (200, 30, 30) if "ants" in p else (30, 30, 200))
    return root


def _audit(tmp_path, pairs) -> str:
    audit = tmp_path / "audit"
    audit.mkdir()
    with open(audit / "duplicates.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split", "other", "other_split", "similarity"])
        w.writerows(pairs)
    for name in ("label_issues.csv", "outliers.csv"):  # a whole audit folder (report --audit checks): no findings
        (audit / name).write_text("path,split,label,suggested,score\n")
    (audit / "audit.json").write_text("{}")  # too old to name its dataset: checked by its val images
    return str(audit)


def test_leaks_into_test_are_flagged_with_the_score_without_them(runs, tmp_path):
    audit = _audit(tmp_path, [["train/ants/a.jpg", "train", TEST[0], "test", 0.97],  # a train↔test copy
                              [TEST[16], "test", "train/bees/b.jpg", "train", 0.95],  # the other way round
                              ["train/ants/c.jpg", "train", VAL[0], "val", 0.99]])  # val: not a test leak
    assert on_test.leaked_test_paths(audit) == {TEST[0]: {"train/ants/a.jpg"}, TEST[16]: {"train/bees/b.jpg"}}
    out = tmp_path / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp_path / "none.json", audit=audit))
    doc = json.loads((out / "verdict.json").read_text())
    assert doc["recommended"] == "softmax"
    assert doc["test"]["leaks"] == 2 and doc["test"]["correct"] == 28
    clean = doc["test"]["without_leaks"]
    assert (clean["n"], clean["correct"]) == (28, 26) and clean["accuracy"] == pytest.approx(26 / 28)
    md = (out / "report.md").read_text()
    verdict = md.split("\n\n")[1]
    assert "**but the audit found 2 of them with a near-copy in train**" in verdict
    assert "Without them it scores 92.9% (26 of 28)" in verdict and "which no choice has seen" not in verdict
    assert "93.3% [78.7, 98.2] **2 leaked; 92.9% without**" in md  # the first table's test cell
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    soft = next(r for r in rows if r["name"] == "softmax")
    assert (soft["test_leaks"], soft["n_test_without_leaks"], soft["test_correct_without_leaks"]) == ("2", "28", "26")


def test_a_run_that_left_the_train_copies_out_has_no_leak(runs, tmp_path):
    audit = _audit(tmp_path, [["train/ants/a.jpg", "train", TEST[0], "test", 0.97],
                              [TEST[16], "test", "train/bees/b.jpg", "train", 0.95]])
    f = runs / "softmax" / "metrics.json"
    m = json.loads(f.read_text())
    f.write_text(json.dumps({**m, "inputs": {"exclude": ["train/ants/a.jpg"]}}))  # classify --exclude: one copy
    out = tmp_path / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp_path / "none.json", audit=audit))
    rows = {r["name"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
    assert (rows["softmax"]["test_leaks"], rows["full FT"]["test_leaks"]) == ("1", "2")


def test_no_audit_no_flag(runs, tmp_path):
    out = tmp_path / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp_path / "none.json"))
    verdict = (out / "report.md").read_text().split("\n\n")[1]
    assert "which no choice has seen" in verdict and "leak" not in verdict
    assert json.loads((out / "verdict.json").read_text())["test"]["leaks"] == 0


def test_a_fine_tune_stopped_short_is_marked_in_the_first_table_and_the_verdict(runs, tmp_path):
    out = tmp_path / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp_path / "none.json"))
    md = (out / "report.md").read_text()
    assert "| full FT (**stopped short: 2 of the recipe's 25 epochs**) |" in md
    verdict = md.split("\n\n")[1]
    assert ("Stopped short of the recipe: **full FT** ran 2 of the recipe's 25 epochs, so its score says little "
            "about what fine-tuning reaches.") in verdict
    ft = next(m for m in json.loads((out / "verdict.json").read_text())["methods"] if m["name"] == "full FT")
    assert ft["short_of_recipe"] == "2 of the recipe's 25 epochs"


def test_the_recipe_epochs_are_the_finetune_stage_default():
    from pipeline.stages.finetune import Config

    assert Config.__dataclass_fields__["epochs"].default == on_test.RECIPE_EPOCHS
    assert on_test.short_of_recipe({"stage": "finetune", "epochs": 25}) is None
    assert on_test.short_of_recipe({"stage": "classify", "epochs": 2}) is None


def test_metrics_csv_has_the_test_columns(runs, tmp_path):
    out = tmp_path / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp_path / "none.json"))
    rows = {r["name"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
    assert set(on_test.TEST_COLUMNS) <= set(next(iter(rows.values())))
    assert (rows["softmax"]["n_test"], rows["softmax"]["test_correct"]) == ("30", "28")
    assert float(rows["full FT"]["test_accuracy"]) == pytest.approx(27 / 30)
    assert np.isclose(float(rows["softmax"]["test_balanced_accuracy"]), 28 / 30)


def test_the_test_split_is_shown_in_full_after_the_choice(runs, tmp_path):
    out = tmp_path / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp_path / "none.json"))
    md = (out / "report.md").read_text()
    section = md[md.index("## The test split, after the choice"):]
    assert md.index("## What the numbers say") < md.index("## The test split, after the choice")
    assert "| softmax | 93.3% [78.7, 98.2] | 93.3% |" in section  # every method's test numbers
    assert "Precision, recall and F1 of every class on test" in section
    assert "| True ↓ / predicted → | ants | bees |" in section and "| ants | 14 | 1 |" in section
    assert "| bees | 1 | 14 |" in section  # the recommended method's test confusion
    assert "![test-mistakes-softmax](figures/test-mistakes-softmax.png)" in section
    assert (out / "figures" / "test-mistakes-softmax.png").stat().st_size > 0
    assert "gets wrong (2 in all)" in section
    per = list(csv.DictReader(open(out / "per_class.csv")))
    test_ants = next(r for r in per if r["run"] == "softmax" and r["class"] == "ants" and r["split"] == "test")
    assert (int(test_ants["support"]), float(test_ants["recall"])) == (15, pytest.approx(14 / 15))
    assert {r["split"] for r in per} == {"val", "test"}


def test_the_choice_never_reads_the_test_split(runs, tmp_path):
    from pipeline.report.choice import recommend
    from pipeline.report.rows import table_rows
    from pipeline.runs.read import load_runs

    before = recommend(*(lambda r: (table_rows(r), r))(load_runs(runs))).use["name"]
    f = runs / "softmax" / "metrics.json"  # the recommended head now fails every test image
    m = json.loads(f.read_text())
    m |= _test_block(list(range(30)))
    f.write_text(json.dumps(m))
    loaded = load_runs(runs)
    assert recommend(table_rows(loaded), loaded).use["name"] == before == "softmax"
