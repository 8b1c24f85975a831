"""The label curve (val accuracy against training images per class) and the per-image losses
behind the report's top losses: known answers on tiny inputs, and the rule that nothing but the
drawn training images is ever fitted on."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from conftest import write_synthetic_codes
from pipeline.heads import label_curve
from pipeline.runs import metrics
from pipeline.codes.store import read_codes
from pipeline.stages.classify import Config, classify
from pipeline.heads.registry import HEADS, Head


def test_draw_is_stratified_reproducible_and_capped_by_small_classes():
    y = np.array([0] * 10 + [1] * 3 + [2] * 7)
    a = label_curve.draw(y, 5, np.random.default_rng([0, 5, 0]))
    assert np.bincount(y[a]).tolist() == [5, 3, 5]  # class 1 has only 3: all of them
    assert len(set(a.tolist())) == len(a) and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, label_curve.draw(y, 5, np.random.default_rng([0, 5, 0])))
    assert not np.array_equal(a, label_curve.draw(y, 5, np.random.default_rng([0, 5, 1])))
    # sizes at or above the largest class are the full train set: not a row of the curve
    assert label_curve.sizes_to_run(y, (1, 2, 5, 10, 50)) == [1, 2, 5]


def test_estimate_grows_with_the_images_drawn():
    y = np.repeat([0, 1], 100)
    # 2 draws x 10 s x (2 + 20 + 100 of 200 images) / 200, each draw at least DRAW_FLOOR of the fit
    assert label_curve.DRAW_FLOOR == 0.5
    assert label_curve.estimate_seconds(y, (1, 10, 50, 100), 2, 10.0) == pytest.approx(2 * 10 * (0.5 + 0.5 + 0.5))
    assert label_curve.estimate_seconds(y, (1, 80), 2, 10.0) == pytest.approx(2 * 10 * (0.5 + 0.8))


def test_curve_rows_from_a_known_fit():
    X = np.concatenate([np.arange(20), np.arange(20) + 100]).astype(np.float32)[:, None] / 10
    y = np.repeat([0, 1], 20)
    seen = []

    def fit(Xs, ys, seed):
        seen.append(len(ys))
        return LogisticRegression().fit(Xs, ys), 1.0, "fixed"
    rows = label_curve.label_curve(fit, label_curve.Labelled(X, y), label_curve.Labelled(X, y), sizes=(1, 3, 50),
                                   draws=4, seed=3)
    assert [r["per_class"] for r in rows] == [1, 3] and seen == [2] * 4 + [6] * 4
    for r in rows:
        assert len(r["accuracy"]) == 4 and r["mean"] == pytest.approx(np.mean(r["accuracy"]))
        assert r["n_train"] == [2 * r["per_class"]] * 4 and r["chosen"] == [1.0] * 4
    assert rows[1]["mean"] == 1.0  # two clusters far apart: three images of each always suffice


class Spy(LogisticRegression):
    seen: list = []

    def fit(self, X, y, **kw):
        Spy.seen.append({r.tobytes() for r in np.asarray(X, dtype=np.float32)})
        return super().fit(X, y, **kw)


def test_label_curve_fits_only_drawn_training_images_and_is_recorded(tmp_path, monkeypatch):
    blobs = write_synthetic_codes(tmp_path / "blobs.h5", n_train=60)
    c = read_codes(blobs)
    train, val = {r.tobytes() for r in c.splits["train"].codes}, {r.tobytes() for r in c.splits["val"].codes}
    Spy.seen = []
    monkeypatch.setitem(HEADS, "spy", Head("spy", lambda s: Pipeline([("clf", Spy())]), "clf__C", (0.1, 1.0, 10.0)))
    [run] = classify(Config(features=blobs, head="spy", out=tmp_path / "runs", folds=3, jobs=1, label_curve="on",
                            label_sizes="1,2,5,100", label_draws=2))
    assert Spy.seen and all(rows <= train and not rows & val for rows in Spy.seen)
    curve = json.loads((run / "metrics.json").read_text())["label_curve"]
    assert [r["per_class"] for r in curve["rows"]] == [1, 2, 5] and curve["draws"] == 2
    one, two = curve["rows"][:2]
    assert one["n_train"] == [3, 3] and one["chosen"] == [1.0, 1.0] and "no CV possible" in one["chosen_by"]
    assert two["chosen_by"] == "CV on the drawn subset only (2-fold)"
    again = classify(Config(features=blobs, head="spy", out=tmp_path / "r2", folds=3, jobs=1, label_curve="on",
                            label_sizes="1,2,5,100", label_draws=2))
    assert json.loads((again[0] / "metrics.json").read_text())["label_curve"]["rows"][2]["accuracy"] == \
        curve["rows"][2]["accuracy"]  # same seed: same draws, same numbers


def test_label_curve_off_and_auto_skip_when_too_slow(tmp_path, monkeypatch, capsys):
    blobs = write_synthetic_codes(tmp_path / "blobs.h5", n_train=60)
    [run] = classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off"))
    assert json.loads((run / "metrics.json").read_text())["label_curve"] is None
    monkeypatch.setattr(label_curve, "estimate_seconds", lambda *a: 75.0)
    [run] = classify(Config(features=blobs, head="softmax", out=tmp_path / "r2", folds=3, jobs=1))
    assert json.loads((run / "metrics.json").read_text())["label_curve"] is None
    said = capsys.readouterr().out  # the budget: at least 10 s (these codes' extraction) less the fitting so far
    assert "label curve skipped: about 75s, over the " in said and "s the curves share" in said


def test_one_budget_for_the_whole_command_cheapest_curves_first():
    assert label_curve.within_budget({"knn": 3.0, "linear": 50.0, "softmax": 10.0, "linsvc": 12.0}, 30.0) == \
        ["knn", "softmax", "linsvc"]
    assert label_curve.within_budget({"a": 40.0}, 30.0) == []


def test_parallel_draws_give_the_serial_rows():
    from pipeline.heads.cv import subset_fit

    rng = np.random.default_rng(1)
    y = np.arange(120) % 3
    X = (rng.normal(size=(120, 6)) + y[:, None]).astype(np.float32)
    data = label_curve.Labelled(X, y)
    one, two = (label_curve.label_curve(subset_fit("softmax", 3, X), data, data, sizes=(1, 2, 5), draws=3, seed=4,
                                        jobs=j) for j in (1, 2))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in one]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in two]


def test_per_image_losses_known_answers():
    y = np.array([0, 1, 1])
    conf, loss, kind = metrics.per_image(y, proba=np.array([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]]))
    assert kind == "probability"
    np.testing.assert_allclose(conf, [0.9, 0.8, 0.5])
    np.testing.assert_allclose(loss, [-np.log(0.9), -np.log(0.2), -np.log(0.5)])
    # two classes, decision = score of class 1: margin |d|, hinge loss of the true class
    conf, loss, kind = metrics.per_image(y, decision=np.array([-2.0, -0.5, 0.3]))
    assert kind == "margin"
    np.testing.assert_allclose(conf, [2.0, 0.5, 0.3])
    np.testing.assert_allclose(loss, [0.0, 1.5, 0.7])
    # three classes: margin = top score - runner-up, loss = max(0, 1 - (true score - best other))
    d = np.array([[3.0, 1.0, 0.0], [0.0, 0.5, 2.0], [1.0, 1.2, 1.0]])
    conf, loss, _ = metrics.per_image(np.array([0, 1, 1]), decision=d)
    np.testing.assert_allclose(conf, [2.0, 1.5, 0.2])
    np.testing.assert_allclose(loss, [0.0, 2.5, 0.8])


def test_one_image_per_class_is_not_left_at_chance_by_a_scaler_fitted_on_two_images():
    """Standardising heads learn the feature scale from all train codes (no labels needed) and
    keep it: fitted on the two drawn images, the scaler alone left them at chance."""
    from pipeline.heads.cv import subset_fit

    rng = np.random.default_rng(0)
    offset = rng.normal(size=(1, 60)) * 3  # large per-feature offsets, as ReLU codes have

    def blobs(n):
        y = np.arange(n) % 2
        X = rng.normal(size=(n, 64)) * np.r_[np.ones(4), np.full(60, 0.05)]
        X[:, :4] += (2 * y[:, None] - 1) * 1.5
        X[:, 4:] += offset
        return label_curve.Labelled(X.astype(np.float32), y)
    train, val = blobs(400), blobs(200)
    for name in ("softmax", "linsvc"):
        plain, frozen = (label_curve.label_curve(subset_fit(name, 5, unlabelled), train, val, sizes=(1,), draws=5)[0]
                         for unlabelled in (None, train.X))
        assert plain["mean"] < 0.55 and frozen["mean"] > plain["mean"] + 0.1, (name, plain["mean"], frozen["mean"])


def test_the_report_names_the_band_the_spread_and_chance(tmp_path, monkeypatch):
    """The label curve's figure draws chance (val's majority class) and names its band (min-max over
    the draws) in its legend and caption; its table says that ± is the sd over the draws."""
    from pipeline.report import figures
    from pipeline.stages import report

    blobs = write_synthetic_codes(tmp_path / "blobs.h5", n_train=60)
    [run] = classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, jobs=1, label_curve="on",
                            label_sizes="1,2", label_draws=3))
    m = json.loads((run / "metrics.json").read_text())
    row = m["label_curve"]["rows"][0]
    assert row["std"] == pytest.approx(np.std(row["accuracy"], ddof=1))  # the sd of the draws, as named
    support = [c["support"] for c in m["val"]["per_class"].values()]
    drawn, real_save = {}, figures._save
    from pipeline.report import label_plot

    for module in (figures, label_plot):  # the label curve is drawn by label_plot, with figures' _save
        monkeypatch.setattr(module, "_save", lambda fig, path, *a: (drawn.__setitem__(path.name, fig),
                                                                    real_save(fig, path, *a))[1])
    report.run(report.Config(runs=tmp_path / "runs", out=tmp_path / "rep", bench=tmp_path / "none.json"))
    legend = [t.get_text() for t in drawn["label-efficiency.png"].axes[0].get_legend().get_texts()]
    chance = f"chance: always val's majority class ({100 * max(support) / sum(support):.1f}%)"
    assert chance in legend and "band: min–max over 3 draws (dots: each draw)" in legend
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Train images per class (val accuracy, mean ± sd over 3 draws)" in md
    caption = next(line for line in md.splitlines() if "training images per class, for the heads" in line)
    assert "min–max, not ± sd" in caption and "dashed: chance, always val's majority class" in caption
