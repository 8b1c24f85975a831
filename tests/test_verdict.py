"""The noise rule and verdict.json: exact McNemar on the same val images, Holm-corrected over every
method compared with the best, no interval-overlap rule; runs on other images are not comparable;
the verdict names the smallest detectable difference. Synthetic runs, CPU, a few seconds, no torch."""
from __future__ import annotations

import json

import pytest

from pipeline.report import choice, record, verdict
from pipeline.report.rows import table, table_rows
from pipeline.runs import folder as runfiles
from pipeline.runs import read as runread
from pipeline.runs.metrics import mcnemar_min_detectable_any, mcnemar_power_min_difference
from pipeline.stages import report
from test_report import fake_env, write_run

N = 153  # hymenoptera's val size
PATHS = [f"val/{'ants' if i < 70 else 'bees'}/{i:03d}.jpg" for i in range(N)]
Y = [0] * 70 + [1] * 83
BEST_WRONG = list(range(5))  # the best: 148 of 153


def wrong(indices) -> list[int]:
    pred = list(Y)
    for i in indices:
        pred[i] = 1 - pred[i]
    return pred


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """write(name, wrong indices, seconds, paths): one classify run on the 153 val images."""
    monkeypatch.setattr(runfiles, "environment", fake_env)

    def write(name, wrong_at, seconds=1.0, paths=PATHS):
        write_run(tmp_path / "runs" / name, method=f"codes + {name}", short=name, stage="classify",
                  pred=wrong(wrong_at), seconds={"fit": seconds}, selection="CV", dataset="toy", paths=paths, y=Y)

    write.root = tmp_path / "runs"
    return write


def load(root):
    runs = runread.load_runs(root)
    return table_rows(runs), runs


def by_name(record: dict) -> dict:
    return {m["name"]: m for m in record["methods"]}


def test_eight_discordant_images_all_one_way_are_separable(runs_dir):
    runs_dir("best", BEST_WRONG, seconds=50.0)
    runs_dir("worse", BEST_WRONG + list(range(10, 18)), seconds=1.0)  # 140 of 153: 8 more wrong, none fewer
    rows, runs = load(runs_dir.root)
    # the old rule called this a tie: the 95% intervals overlap
    assert rows[1]["accuracy_ci95_hi"] > rows[0]["accuracy_ci95_lo"]
    rec = record.verdict_record(rows, runs)
    worse = by_name(rec)["worse"]
    assert (worse["correct"], worse["b"], worse["c"]) == (140, 8, 0)
    assert worse["p_vs_best"] == pytest.approx(2 * 0.5 ** 8)  # 0.0078
    assert worse["p_holm"] == pytest.approx(worse["p_vs_best"])  # a family of one
    assert worse["separable_from_best"] is True
    assert (rec["best"], rec["recommended"]) == ("best", "best")  # the cheap one is separable: not a candidate
    text = verdict.verdict(rows, runs)
    assert "the best on val and separable from the other method paired with it" in text
    d = mcnemar_power_min_difference(N, 8 / N)
    assert rec["min_detectable_difference"] == pytest.approx(d) and rec["min_detectable_from"].startswith("median")
    assert f"With these {N} val images, a difference smaller than about {100 * d:.1f} points" in text
    assert "cannot tell" not in text


def test_four_against_four_discordant_images_are_not_separable(runs_dir):
    runs_dir("ft", BEST_WRONG, seconds=50.0)
    runs_dir("softmax", [0, 5, 6, 7, 8], seconds=1.0)  # also 148 of 153: right on 1-4, wrong on 5-8
    rows, runs = load(runs_dir.root)
    rec = record.verdict_record(rows, runs)
    assert (rec["best"], rec["recommended"]) == ("softmax", "softmax")  # equal accuracy: the cheaper ranks first
    ft = by_name(rec)["ft"]
    assert (ft["b"], ft["c"], ft["p_vs_best"], ft["p_holm"], ft["separable_from_best"]) == (4, 4, 1.0, 1.0, False)
    text = verdict.verdict(rows, runs)
    d = mcnemar_power_min_difference(N, 8 / N)
    assert (f"These {N} val images cannot tell **softmax** and **ft** apart; a difference smaller than about "
            f"{100 * d:.1f} points ({d * N:.0f} of {N} images) would go unseen") in text
    assert "optimistic" in text and "there is no test split" in text


def test_holm_across_three_methods(runs_dir):
    runs_dir("best", BEST_WRONG, seconds=1.0)
    runs_dir("a", BEST_WRONG + list(range(10, 18)))  # b = 8, c = 0: p = 0.0078
    runs_dir("b", BEST_WRONG + list(range(20, 26)))  # b = 6, c = 0: p = 0.03125
    runs_dir("c", BEST_WRONG[1:] + list(range(30, 35)))  # b = 5, c = 1: p = 0.21875
    rows, runs = load(runs_dir.root)
    m = by_name(record.verdict_record(rows, runs))
    assert [(m[k]["b"], m[k]["c"]) for k in "abc"] == [(8, 0), (6, 0), (5, 1)]
    assert [m[k]["p_vs_best"] for k in "abc"] == pytest.approx([2 / 2 ** 8, 2 / 2 ** 6, 0.21875])
    # Holm: 3 × 0.0078 = 0.023; max(2 × 0.03125, 0.0234) = 0.0625; max(1 × 0.21875, 0.0625) = 0.21875
    assert [m[k]["p_holm"] for k in "abc"] == pytest.approx([3 * 2 / 2 ** 8, 0.0625, 0.21875])
    # b's raw p is below 0.05, but not once corrected for the three comparisons
    assert [m[k]["separable_from_best"] for k in "abc"] == [True, False, False]
    rec, best, tied, _ = choice.recommend(rows, runs)
    assert best["name"] == "best" and sorted(t["name"] for t in tied) == ["b", "c"]


def test_runs_on_other_images_are_not_comparable(runs_dir):
    runs_dir("best", BEST_WRONG, seconds=1.0)
    runs_dir("elsewhere", list(range(10)), seconds=0.1, paths=[p.replace("val/", "val2/") for p in PATHS])
    rows, runs = load(runs_dir.root)
    rec = record.verdict_record(rows, runs)
    lost = by_name(rec)["elsewhere"]
    assert (lost["comparable"], lost["separable_from_best"], lost["p_vs_best"], lost["b"]) == (False, None, None, None)
    assert rec["recommended"] == "best" and rec["min_detectable_difference"] is None  # not tied, so not a candidate
    text = verdict.verdict(rows, runs)
    assert "**elsewhere** was not scored on the same val images as the best" in text and "not comparable" in text
    assert "not comparable" in " ".join(verdict.summary_paragraphs(rows, runs))


def test_verdict_json_schema_and_names_match_the_table(runs_dir, tmp_path):
    runs_dir("best", BEST_WRONG, seconds=50.0)
    runs_dir("cheap", [0, 1, *range(10, 15)], seconds=1.0)  # 146: b = 5, c = 3
    runs_dir("bad", list(range(40, 80)), seconds=0.5)
    out = tmp_path / "out"
    written = report.run(report.Config(runs=runs_dir.root, out=out, bench=tmp_path / "none.json"))
    assert written["verdict"] == out / "verdict.json"
    doc = json.loads((out / "verdict.json").read_text())
    assert list(doc) == ["split", "compared_on", "recommended", "use", "run_folder", "reason", "tied_with_best", "best",
                         "alpha", "cost_ratio", "correction", "power", "min_detectable_difference",
                         "min_detectable_from", "min_detectable_why", "min_detectable_any_discordance", "methods"]
    assert doc["run_folder"] == (runs_dir.root / "cheap").as_posix()  # what predict --model and export --model take
    assert doc["reason"].startswith("it is among the cheapest (within 2×") and doc["min_detectable_why"] is None
    assert doc["use"]["stage"] == "classify" and set(doc["use"]) == {"backbone", "weights", "stage", "head"}
    assert (doc["split"], doc["alpha"], doc["correction"]) == ("val", 0.05, "holm")
    keys = {"name", "accuracy", "n", "correct", "b", "c", "p_vs_best", "p_holm", "separable_from_best"}
    assert all(keys <= set(m) for m in doc["methods"])
    rows = table_rows(runread.load_runs(runs_dir.root))
    names = [cells[0] for cells, r in zip(table(rows).cells, rows) if r["kind"] == "ours"]
    assert [m["name"] for m in doc["methods"]] == names == ["best", "cheap", "bad"]
    assert (doc["best"], doc["recommended"]) == ("best", "cheap")
    md = (out / "report.md").read_text()
    assert all(f"| {n} |" in md for n in names)
    cheap, bad = doc["methods"][1:]
    assert (cheap["b"], cheap["c"], cheap["separable_from_best"]) == (5, 3, False)
    assert bad["separable_from_best"] is True and bad["p_holm"] < 0.05
    d = mcnemar_power_min_difference(N, 8 / N)  # at the best vs the recommended: 8 of 153 disagree
    assert doc["min_detectable_from"] == "best vs recommended" and doc["min_detectable_difference"] == pytest.approx(d)
    first = md.split("\n\n")[1]  # the verdict paragraph, right under the title
    assert first.startswith("**Use cheap**")
    assert (f"These {N} val images cannot tell **best** and **cheap** apart; a difference smaller than about "
            f"{100 * d:.1f} points ({d * N:.0f} of {N} images) would go unseen") in first


def test_repeats_pair_only_draws_of_the_same_pooled_images():
    from pipeline.report.record import _repeats

    def rep(accs, pooled):
        return {"repeats": 3, "seed": 0, "n_train": 80, "n_test": 20, "accuracy": accs, "mean": sum(accs) / 3,
                "sd": 0.01, "pooled": pooled}
    best = {"name": "softmax", "repeats": rep([0.95, 0.9, 0.92], "abc")}
    same = _repeats(best, {"repeats": rep([0.8, 0.82, 0.79], "abc")})
    assert same["test"] == "corrected resampled t (Nadeau-Bengio)" and same["diff_vs_best"] > 0
    assert same["vs"] == "softmax"
    other = _repeats(best, {"repeats": rep([0.8, 0.82, 0.79], "xyz")})  # e.g. classify --exclude left images out
    from pipeline.report.record import _holm_repeats

    family = [{"p_vs_best": 0.04}, {"p_vs_best": 0.01}]
    _holm_repeats(family)  # corrected over every re-drawn comparison, as the McNemar ones are
    assert [f["p_holm_vs_best"] for f in family] == pytest.approx([0.04, 0.02])
    assert "p_vs_best" not in other and other["repeats"] == 3


def _with_probabilities(root, name, loss_right, loss_wrong=2.3, repeats=None):
    """Make a run's saved scores probabilities, each image's log-loss `loss_right` where it is right
    (a list: one per image), and optionally its re-drawn splits."""
    f = root / name / "metrics.json"
    m = json.loads(f.read_text())
    m["score_kind"] = "probability"
    for i, p in enumerate(m["predictions"]):
        p["loss"] = (loss_right[i] if isinstance(loss_right, list) else loss_right) if p["pred"] == p["true"] \
            else loss_wrong
    if repeats:
        m["repeats"] = repeats
    f.write_text(json.dumps(m))


def test_a_tied_head_without_probabilities_loses_to_one_with_good_probabilities(runs_dir):
    runs_dir("linsvc", BEST_WRONG, seconds=1.0)  # the best, and the cheapest: margins only
    runs_dir("softmax", [0, 1, 2, 3, 5], seconds=1.5)  # tied (b = c = 1), well calibrated
    runs_dir("overconfident", [0, 1, 2, 3, 6], seconds=1.2)  # tied, right but unsure: high log-loss everywhere
    _with_probabilities(runs_dir.root, "softmax", [0.02 + 0.001 * i for i in range(N)])
    _with_probabilities(runs_dir.root, "overconfident", [0.6 + 0.001 * i for i in range(N)])
    rows, runs = load(runs_dir.root)
    rec = choice.recommend(rows, runs)
    assert (rec.best["name"], len(rec.tied), rec.use["name"]) == ("linsvc", 2, "softmax")
    assert rec.why[0] == ("it gives probabilities, which 1 method does not; its probabilities are not separably worse "
                          "than the best ones (1 method with a separably higher mean log-loss, over 1.25× the lowest: "
                          "paired t, Holm)")
    text = verdict.verdict(rows, runs)
    assert "Why this one: of the 3 methods these val images cannot tell apart, it gives probabilities" in text


def test_a_consistent_but_tiny_log_loss_gap_does_not_drop_the_more_accurate_method(runs_dir):
    """Seen on hymenoptera: linear 96.7% with log-loss 0.121 lost to a 14x dearer, less accurate
    softmax on views with 0.119, because a signed-rank test found the 0.002 nat gap consistent."""
    runs_dir("accurate", BEST_WRONG, seconds=1.0)  # the best on val
    runs_dir("dear", [0, 1, 2, 3, 5, 6], seconds=14.0)  # tied (b = 2, c = 1), a hair lower log-loss
    _with_probabilities(runs_dir.root, "accurate", [0.101 + 0.001 * i for i in range(N)], loss_wrong=1.0)
    _with_probabilities(runs_dir.root, "dear", [0.100 + 0.001 * i for i in range(N)], loss_wrong=0.8)
    rows, runs = load(runs_dir.root)
    rec = choice.recommend(rows, runs)
    assert rec.use["name"] == "accurate" and not any("log-loss" in w for w in rec.why), rec.why


def test_cost_counts_only_past_twice_the_cheapest(runs_dir):
    runs_dir("a", BEST_WRONG, seconds=5.54)  # the best by table order (tied accuracy, cheaper first)...
    runs_dir("b", [0, 1, 2, 3, 5], seconds=5.32)  # ...4% apart: timing noise, no reason to choose
    rows, runs = load(runs_dir.root)
    rec = choice.recommend(rows, runs)
    assert len(rec.tied) == 1 and rec.why == ["2 are equally accurate on val and alike on these: it is the first "
                                              "in the table"]
    assert not any("cheapest" in w for w in rec.why)


def test_cost_decides_when_one_is_more_than_twice_as_cheap(runs_dir):
    runs_dir("slow", BEST_WRONG, seconds=12.0)
    runs_dir("fast", [0, 1, 2, 3, 5], seconds=5.0)
    rows, runs = load(runs_dir.root)
    rec = choice.recommend(rows, runs)
    assert rec.use["name"] == "fast" and rec.why[0].startswith("it is among the cheapest (within 2×")


def test_a_run_on_fewer_images_is_chosen_only_when_separably_better_after_holm(runs_dir):
    # knn on every image: 6 more wrong than its --exclude twin (exact p = 0.031 alone); softmax likewise
    # run both ways, equal: two pairs, so Holm doubles 0.031 past 0.05
    runs_dir("knn", BEST_WRONG + list(range(20, 26)), seconds=1.0)
    runs_dir("knn-excluded", BEST_WRONG, seconds=1.0)
    runs_dir("softmax", BEST_WRONG[:4] + [30], seconds=1.0)
    runs_dir("softmax-excluded", BEST_WRONG[:4] + [30], seconds=1.0)
    rows, runs = load(runs_dir.root)
    pairs = {t.full["name"]: t for t in choice.twins(rows, runs)}
    assert pairs["knn"].test["p_value"] == pytest.approx(2 / 2 ** 6) and pairs["knn"].p_holm == pytest.approx(0.0625)
    assert not pairs["knn"].fewer_better
    rec = choice.recommend(rows, runs)
    assert rec.use["name"] == "softmax"  # every image; the excluded runs drop
    assert rec.why[0].startswith("it is trained on every image (2 runs with --exclude not separably better")
    # one pair only: 0.031 stands, and the run without the 2 images is the one to use
    (runs_dir.root / "softmax-excluded" / "metrics.json").unlink()
    rows, runs = load(runs_dir.root)
    assert choice.recommend(rows, runs).use["name"] == "knn-excluded"


def test_a_method_separably_worse_on_redrawn_splits_drops(runs_dir):
    def rep(accs):
        return {"repeats": 5, "seed": 0, "n_train": 300, "n_test": 100, "accuracy": accs, "mean": sum(accs) / 5,
                "sd": 0.01, "pooled": "abc"}
    runs_dir("weak", BEST_WRONG, seconds=1.0)
    runs_dir("strong", [0, 1, 2, 3, 5], seconds=1.0)
    for name, accs in (("weak", [0.80, 0.81, 0.79, 0.80, 0.82]), ("strong", [0.95, 0.96, 0.94, 0.95, 0.96])):
        f = runs_dir.root / name / "metrics.json"
        f.write_text(json.dumps({**json.loads(f.read_text()), "repeats": rep(accs)}))
    rows, runs = load(runs_dir.root)
    rec = choice.recommend(rows, runs)
    assert rec.use["name"] == "strong" and rec.why[0].startswith("its re-drawn splits are not separably worse")


def test_min_detectable_difference_says_why_not_and_gives_the_floor(runs_dir, tmp_path):
    runs_dir("best", BEST_WRONG, seconds=1.0)
    runs_dir("twin", [0, 1, 2, 3, 5], seconds=1.0)  # 2 of 153 disagree: nothing is detectable at that rate
    out = tmp_path / "out"
    report.run(report.Config(runs=runs_dir.root, out=out, bench=tmp_path / "none.json"))
    doc = json.loads((out / "verdict.json").read_text())
    assert doc["min_detectable_difference"] is None and "too few discordant images" in doc["min_detectable_why"]
    # the best case (every disagreement one way) needs 6 discordant images: 8 of 153 expected, about 5 points
    assert doc["min_detectable_any_discordance"] == pytest.approx(mcnemar_min_detectable_any(N))
    assert 0.04 < doc["min_detectable_any_discordance"] < 0.06
    assert mcnemar_power_min_difference(N, doc["min_detectable_any_discordance"] + 1e-9) == pytest.approx(
        doc["min_detectable_any_discordance"], rel=1e-3)
