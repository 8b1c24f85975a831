import csv
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from conftest import cli, needs_shared, write_synthetic_codes
from pipeline import UserError
from pipeline.codes.store import read_codes
from pipeline.heads.cv import fit_head
from pipeline.stages.classify import Config, classify
from pipeline.stages.features import Config as FConfig, extract
from pipeline.heads.registry import HEADS, Head
from pipeline.stages.predict import Config as PConfig, predict


@pytest.fixture
def blobs(tmp_path):
    return write_synthetic_codes(
        tmp_path / "blobs.h5", n_train=240
    )  # the linear head's recipe needs ~15 batches an epoch


@pytest.mark.parametrize("head", list(HEADS))
def test_every_head_separates_separable_codes(blobs, head):
    c = read_codes(blobs)
    tr, va = c.splits["train"], c.splits["val"]
    model = fit_head(head, tr.codes, tr.labels, folds=3, seed=0).best_estimator_
    assert (model.predict(va.codes) == va.labels).all()


@pytest.mark.parametrize("head", list(HEADS))
def test_seeded_fit_is_reproducible_and_the_safe_format_round_trips(blobs, head, tmp_path):
    c = read_codes(blobs)
    tr, va = c.splits["train"], c.splits["val"]
    a = fit_head(head, tr.codes, tr.labels, folds=3, seed=7).best_estimator_
    b = fit_head(head, tr.codes, tr.labels, folds=3, seed=7).best_estimator_
    fa = getattr(a, "decision_function", None) or a.predict_proba
    fb = getattr(b, "decision_function", None) or b.predict_proba
    np.testing.assert_array_equal(fa(va.codes), fb(va.codes))
    from pipeline.runs import folder as runs
    runs.save_head(tmp_path / "model.npz", a)
    back = runs.load_head(tmp_path, {"file": "model.npz"})
    np.testing.assert_array_equal(back.predict(va.codes), a.predict(va.codes))
    np.testing.assert_array_equal((getattr(back, "decision_function", None) or back.predict_proba)(va.codes),
                                  fa(va.codes))


def test_run_folder_holds_model_and_metrics(blobs, tmp_path):
    [run] = classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off"))
    m = json.loads((run / "metrics.json").read_text())
    assert m["stage"] == "classify" and m["head"] == "softmax" and m["dataset"] == "blobs"
    assert (m["n_train"], m["n_val"]) == (240, 20) and m["val"]["accuracy"] == 1.0
    lo, hi = m["val"]["accuracy_ci95"]
    assert lo == pytest.approx(0.8389, abs=1e-4) and hi == 1.0  # Wilson, 20/20
    assert m["selection"] == "CV on train (3-fold)" and "C" in m["hyperparameters"] and m["cv_score"] == 1.0
    assert m["val"]["confusion"] == [[7, 0, 0], [0, 7, 0], [0, 0, 6]] and m["val"]["log_loss"] is not None
    assert len(m["predictions"]) == 20 and m["seconds"]["extract"] == 1.5 and m["seconds"]["fit"] > 0
    assert (run / "model.npz").is_file() and json.loads((run / "model.json").read_text())["kind"] == "head"
    # called from Python: the command is rebuilt from the settings that differ from the defaults
    assert m["command"] == f"python -m pipeline classify --features {blobs} --head softmax --out {tmp_path / 'runs'} " \
                           "--folds 3 --label-curve off" and m["short"] == "softmax"


def test_val_predictions_csv_worst_first_with_known_losses(tmp_path):
    blobs = write_synthetic_codes(tmp_path / "hard.h5", n_train=90, sep=0.6)  # overlapping classes: mistakes
    for head in ("softmax", "linsvc"):
        [run] = classify(Config(features=blobs, head=head, out=tmp_path / "runs", folds=3, label_curve="off"))
        m = json.loads((run / "metrics.json").read_text())
        with open(run / "predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        kind = "probability" if head == "softmax" else "margin"
        assert m["score_kind"] == kind and list(rows[0]) == ["path", "true", "predicted", kind, "loss", "correct"]
        losses = [float(r["loss"]) for r in rows]
        assert losses == sorted(losses, reverse=True) and len(rows) == m["val"]["n"]
        assert sum(r["correct"] == "1" for r in rows) == m["val"]["correct"] < len(rows)
        by_path = {p["path"]: p for p in m["predictions"]}
        assert {r["path"] for r in rows} == set(by_path)
        if head == "softmax":  # the mean of the per-image losses is the log-loss the table shows
            assert np.mean(losses) == pytest.approx(m["val"]["log_loss"], rel=1e-4)
        else:  # hinge: a mistake always costs more than 1, a confident right answer nothing
            assert all(float(r["loss"]) > 1 for r in rows if r["correct"] == "0")


def test_the_command_line_typed_is_recorded(tmp_path):
    blobs = write_synthetic_codes(tmp_path / "blobs.h5")
    # flags in an order of the user's own, one of them at its default: recorded as typed, not rebuilt
    r = cli("classify", "--label-curve", "off", "--out", tmp_path / "runs", "--head", "knn", "--seed", "0",
            "--features", blobs)
    assert r.returncode == 0, r.stderr
    [m] = [json.loads(f.read_text()) for f in (tmp_path / "runs").rglob("metrics.json")]
    assert m["command"] == (f"python -m pipeline classify --label-curve off --out {tmp_path / 'runs'} --head knn "
                            f"--seed 0 --features {blobs}")


class Spy(LogisticRegression):
    """Logistic regression that records every row it is fitted on."""
    seen: list = []

    def fit(self, X, y, **kw):
        Spy.seen.append({r.tobytes() for r in np.asarray(X, dtype=np.float32)})
        return super().fit(X, y, **kw)


def test_cross_validation_never_reads_val(blobs, tmp_path, monkeypatch):
    c = read_codes(blobs)
    val_rows = {r.tobytes() for r in c.splits["val"].codes}
    train_rows = {r.tobytes() for r in c.splits["train"].codes}
    seen = Spy.seen = []
    monkeypatch.setitem(HEADS, "spy", Head("spy", lambda s: Pipeline([("clf", Spy())]), "clf__C", (0.1, 1.0)))
    # in process (jobs=1), so Spy sees every fit; the label curve has its own test
    classify(Config(features=blobs, head="spy", out=tmp_path / "runs", folds=3, jobs=1, label_curve="off"))
    assert len(seen) == 2 * 3 + 1  # every fold of every grid point, then the refit
    for rows in seen:
        assert rows <= train_rows and not rows & val_rows
    assert seen[-1] == train_rows


def test_bad_inputs(blobs, tmp_path, folder):
    one = write_synthetic_codes(tmp_path / "one.h5", n_train=4, classes=("a", "b", "c"))  # class c: 1 image
    with pytest.raises(UserError, match="single training image"):
        classify(Config(features=one, head="softmax", out=tmp_path / "runs", label_curve="off"))
    r = cli("classify", "--features", blobs, "--head", "forest")
    assert r.returncode == 2 and "invalid choice" in r.stderr and len(r.stderr.splitlines()) == 1
    (tmp_path / "half.h5").write_bytes(b"")
    r = cli("classify", "--features", tmp_path / "half.h5", "--out", tmp_path / "runs")
    assert r.returncode == 2 and "not a readable HDF5" in r.stderr
    with pytest.raises(UserError, match="another|holds codes of dataset"):
        classify(Config(features=blobs, head="knn", out=tmp_path / "runs", data=str(folder), label_curve="off"))


def test_stale_features_are_refused(folder, tmp_path):
    feats = extract(
        FConfig(data=folder, backbone="resnet18", weights="none", workers=0, out=str(tmp_path / "f.h5"), device="cpu")
    )
    classify(Config(features=feats, head="knn", out=tmp_path / "runs", data=str(folder), folds=3, label_curve="off"))
    (folder / "val/ants/img000.jpg").unlink()
    with pytest.raises(UserError, match="stale"):
        classify(Config(features=feats, head="knn", out=tmp_path / "runs", data=str(folder), folds=3,
                        label_curve="off"))


def test_predict_round_trips_through_a_random_backbone(folder, tmp_path):
    feats = extract(
        FConfig(
            data=folder,
            backbone="resnet18",
            weights="none",
            seed=3,
            workers=0,
            out=str(tmp_path / "f.h5"),
            device="cpu",
        )
    )
    [run] = classify(Config(features=feats, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off"))
    m = json.loads((run / "metrics.json").read_text())
    pcfg = PConfig(model=run, images=(str(folder / "val"),), device="cpu", csv=str(tmp_path / "p.csv"))
    rows, bad, kind = predict(pcfg)
    assert bad == [] and kind == "probability"
    classes = m["classes"]
    want = {p["path"]: (classes[p["pred"]], p["score"]) for p in m["predictions"]}
    assert len(rows) == len(want)
    for path, cls, score in rows:
        rel = "val/" + path.split("/val/")[1]
        assert cls == want[rel][0] and score == pytest.approx(want[rel][1], abs=1e-4)
    assert (tmp_path / "p.csv").read_text().startswith("path,class,probability\n")
    # a head without probabilities says it prints margins; an unreadable image: named, exit code 1
    [svc] = classify(Config(features=feats, head="linsvc", out=tmp_path / "runs", folds=3, label_curve="off"))
    (folder / "val" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    r = cli("predict", "--model", svc, "--device", "cpu", folder / "val")
    assert r.returncode == 1 and r.stdout.startswith("path\tclass\tmargin\n")
    assert "broken.jpg: not labelled: undecodable" in r.stderr
    assert f"labelled {len(rows)} of {len(rows) + 1} images" in r.stderr.splitlines()[-1]


def test_predict_refuses_other_weights(folder, tmp_path):
    import torch
    from pipeline.codes.backbone import load_backbone
    torch.save(load_backbone("resnet18", "none", seed=1).trunk.state_dict(), tmp_path / "w.pth")
    feats = extract(
        FConfig(
            data=folder,
            backbone="resnet18",
            weights=str(tmp_path / "w.pth"),
            workers=0,
            out=str(tmp_path / "f.h5"),
            device="cpu",
        )
    )
    [run] = classify(Config(features=feats, head="knn", out=tmp_path / "runs", folds=3, label_curve="off"))
    torch.save(load_backbone("resnet18", "none", seed=2).trunk.state_dict(), tmp_path / "w.pth")
    with pytest.raises(UserError, match="not the weights"):
        predict(PConfig(model=run, images=(str(folder / "val"),), device="cpu"))


@needs_shared
def test_hymenoptera_softmax_and_linsvc_reach_94(hymenoptera_codes, tmp_path):
    for run in classify(Config(features=hymenoptera_codes, head="all", out=tmp_path / "runs", label_curve="off")):
        m = json.loads((run / "metrics.json").read_text())
        if m["head"] in ("softmax", "linsvc"):
            assert m["val"]["accuracy"] >= 0.94, (m["head"], m["val"]["accuracy"])


def test_rerun_with_the_same_inputs_does_no_work(blobs, tmp_path, capsys):
    [run] = classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off"))
    stamp = (run / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off")) == [run]
    assert "up to date" in capsys.readouterr().out and (run / "metrics.json").stat().st_mtime_ns == stamp
    # another setting: refused with what changed (the one up-to-date rule), the run kept; --force refits
    with pytest.raises(UserError, match=r"other inputs \(folds 3 -> 4\).*--force"):
        classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=4, label_curve="off"))
    assert (run / "metrics.json").stat().st_mtime_ns == stamp
    classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=4, force=True, label_curve="off"))
    assert (run / "metrics.json").stat().st_mtime_ns != stamp


def test_a_folder_that_is_not_a_run_is_never_replaced(blobs, tmp_path):
    victim = tmp_path / "runs" / "blobs-resnet18-none-softmax"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(UserError, match="not a run folder"):
            classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off",
                            force=force))
    assert (victim / "precious.txt").read_text() == "keep me"


def test_val_never_chooses_and_scores_the_same_head(blobs, tmp_path):
    r = cli("classify", "--features", blobs, "--train-split", "val", "--val-split", "val", "--out", tmp_path / "runs")
    assert r.returncode == 2 and "both 'val'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_repeats_give_each_head_a_spread_over_the_same_redrawn_splits(blobs, tmp_path):
    from pipeline.heads.repeats import splits
    runs_ = classify(Config(features=blobs, head="all", out=tmp_path / "runs", folds=3, label_curve="off", repeats=3))
    docs = [json.loads((r / "metrics.json").read_text()) for r in runs_]
    for m in docs:
        rep = m["repeats"]
        assert rep["repeats"] == 3 and len(rep["accuracy"]) == 3 and rep["n_test"] == m["n_val"]
        assert rep["mean"] == pytest.approx(np.mean(rep["accuracy"])) and rep["sd"] >= 0
    y = np.arange(100) % 4
    a, b = splits(y, 25, 3, seed=0), splits(y, 25, 3, seed=0)
    assert all((x[1] == z[1]).all() for x, z in zip(a, b))  # the same draws for every head
    assert all(np.bincount(y[te]).tolist() == [6, 6, 6, 7] or sorted(np.bincount(y[te])) == [6, 6, 6, 7]
               for _, te in a) and not (a[0][1] == a[1][1]).all()
    with pytest.raises(UserError, match="--repeats"):
        Config(features=blobs, repeats=1)
    from pipeline.stages import report
    report.run(report.Config(runs=tmp_path / "runs", out=tmp_path / "rep", bench=tmp_path / "none.json"))
    assert "Re-drawn splits, mean ± sd" in (tmp_path / "rep" / "report.md").read_text()
    v = json.loads((tmp_path / "rep" / "verdict.json").read_text())
    assert all(m["repeats"]["repeats"] == 3 for m in v["methods"])


def _copies(rng, n_photos: int, copies: int, noise: float):
    """Two overlapping classes of 'photos', each present `copies` times with a little noise (crops or
    re-saves of one photo): (codes, labels, group of each row)."""
    y = np.arange(n_photos) % 2
    photos = rng.normal(0, 1, (n_photos, 8)) + y[:, None] * 0.6
    X = np.repeat(photos, copies, axis=0) + rng.normal(0, noise, (n_photos * copies, 8))
    return X, np.repeat(y, copies), np.repeat(np.arange(n_photos), copies)


def test_grouped_folds_never_put_one_group_on_both_sides():
    from pipeline.heads.cv import cv_folds

    rng = np.random.default_rng(0)
    _, y, groups = _copies(rng, 40, 5, 0.1)
    for per_image in (1, 3):
        rows_y = np.repeat(y, per_image)
        cv = cv_folds(rows_y, 5, 0, per_image, groups)
        assert cv.get_n_splits() == 5
        row_group = np.repeat(groups, per_image)
        for tr, te in cv.split(np.zeros(len(rows_y)), rows_y):
            assert not set(row_group[tr]) & set(row_group[te])
            assert set(rows_y[te]) == {0, 1}  # still stratified: both classes in every fold
    with pytest.raises(UserError, match="2 groups per class"):
        cv_folds(y, 5, 0, groups=np.where(y == 0, 0, groups))  # class 0 in one group


def test_the_grouped_cv_error_names_each_class_in_one_group_and_the_fix():
    from pipeline.heads.cv import cv_folds

    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    groups = np.array([7, 7, 7, 1, 2, 3, 3, 3, 3])  # 'ants' and 'wasps' each in one group, 'bees' in two
    with pytest.raises(UserError) as e:
        cv_folds(y, 5, 0, groups=groups, classes=["ants", "bees", "wasps"])
    msg = str(e.value)
    assert "'ants' (3 images, 1 group)" in msg and "'wasps' (4 images, 1 group)" in msg and "bees" not in msg
    assert "2 classes have" in msg and "--groups" in msg and "\n" not in msg


def test_near_copies_make_cv_optimistic_and_grouped_cv_is_not():
    """Five near-copies of each photo: ungrouped CV lets 1-NN find each image's twin and scores far
    above what new photos get; grouped CV scores close to new photos, and picks more neighbours."""
    from pipeline.heads.cv import cv_folds

    rng = np.random.default_rng(1)
    X, y, groups = _copies(rng, 120, 5, 0.05)
    Xn, yn, _ = _copies(rng, 400, 1, 0.05)  # new photos
    plain = fit_head("knn", X, y, 5, 0)
    grouped = fit_head("knn", X, y, cv_folds(y, 5, 0, 1, groups), 0)
    new = grouped.best_estimator_.score(Xn, yn)
    assert plain.best_score_ > 0.95 and plain.best_params_["clf__n_neighbors"] == 1
    assert abs(grouped.best_score_ - new) < 0.08 and grouped.best_score_ < plain.best_score_ - 0.15
    assert grouped.best_params_["clf__n_neighbors"] > 1


def test_groups_files_in_both_shapes_and_their_errors(tmp_path):
    from pipeline.images.groups import group_ids, read_groups

    (tmp_path / "g.csv").write_text("path,group\na.jpg,x\nb.jpg,x\nc.jpg,y\n")
    (tmp_path / "dup.csv").write_text("path,split,other,other_split,similarity\na.jpg,val,b.jpg,train,0.9\n"
                                      "c.jpg,val,b.jpg,train,0.8\ne.jpg,val,f.jpg,val,0.9\n")
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "f.jpg"]
    ids = group_ids(paths, read_groups(tmp_path / "g.csv"), "g")
    assert ids[0] == ids[1] != ids[2] and len(set(ids)) == 5  # d, e, f: a group each
    ids = group_ids(paths, read_groups(tmp_path / "dup.csv"), "dup")
    assert ids[0] == ids[1] == ids[2] and ids[4] == ids[5] and len(set(ids)) == 3  # a~b~c chained, d alone
    (tmp_path / "bad.csv").write_text("file,label\na.jpg,x\n")
    with pytest.raises(UserError, match="path,group or path,other"):
        read_groups(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="names none of these"):
        group_ids(["z.jpg"], read_groups(tmp_path / "g.csv"), "g")
    with pytest.raises(UserError, match="does not exist"):
        read_groups(tmp_path / "missing.csv")


def test_classify_groups_are_recorded_and_refused_with_repeats(blobs, tmp_path):
    tr = read_codes(blobs).splits["train"]
    groups = tmp_path / "groups.csv"
    groups.write_text("path,group\n" + "".join(f"{p},{i // 4}\n" for i, p in enumerate(tr.paths)))
    [run] = classify(Config(features=blobs, head="softmax", out=tmp_path / "runs", folds=3, label_curve="off",
                            groups=str(groups)))
    m = json.loads((run / "metrics.json").read_text())
    assert m["selection"] == "CV on train (3-fold, grouped: groups.csv)" and len(m["inputs"]["groups"]) == 64
    r = cli("classify", "--features", blobs, "--out", tmp_path / "r2", "--groups", groups, "--repeats", "3")
    assert r.returncode == 2 and "--repeats" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("classify", "--features", blobs, "--out", tmp_path / "r3", "--groups", groups, "--head", "sgd")
    assert r.returncode == 2 and "sgd" in r.stderr and len(r.stderr.strip().splitlines()) == 1
