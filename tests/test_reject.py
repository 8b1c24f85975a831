"""predict --reject: images far from every training image get the status 'unknown' (their class
kept), by a rule set on val at a stated rate and recorded in the run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import cli, make_folder, make_image
from pipeline.heads.reject import codes_rule, confidence_rule, nearest_distance, threshold


def test_nearest_distance_and_threshold_known_answers():
    ref = np.eye(3, dtype=np.float32)
    d = nearest_distance(ref, np.array([[2, 0, 0], [1, 1, 0], [0, 0, -1]], dtype=np.float32))
    np.testing.assert_allclose(d, [0.0, 1 - 1 / np.sqrt(2), 1.0], atol=1e-6)
    assert threshold(np.arange(101), rate=0.05) == pytest.approx(95.0)
    rng = np.random.default_rng(0)
    ref16, rule = codes_rule(rng.normal(size=(50, 8)), rng.normal(size=(40, 8)))
    assert ref16.dtype == np.float16 and rule["rate"] == 0.05 and rule["set_on"] == "val (40 images)"
    assert confidence_rule(np.array([[0.9, 0.1], [0.6, 0.4]]), rate=0.5)["threshold"] == pytest.approx(0.25)


def test_an_unseen_class_is_mostly_turned_away_and_known_images_kept(tmp_path):
    data = make_folder(tmp_path / "data", n_train=12, n_val=12)  # red ants, blue bees
    unseen = tmp_path / "green"
    for i in range(12):
        make_image(unseen / f"g{i}.jpg", (40, 200, 40), seed=1000 + i)
    feats, runs = tmp_path / "f.h5", tmp_path / "runs"
    assert cli("features", "--data", data, "--weights", "none", "--out", feats, "--device", "cpu",
               "--workers", "0").returncode == 0
    assert cli("classify", "--features", feats, "--head", "softmax", "--out", runs, "--label-curve", "off",
               "--folds", "3").returncode == 0
    [run] = [p for p in runs.iterdir() if p.is_dir()]
    rule = json.loads((run / "model.json").read_text())["reject"]
    assert rule["rule"].startswith("cosine distance") and (run / rule["file"]).is_file()

    def unknown_share(*images) -> float:
        r = cli("predict", "--model", run, *images, "--reject", "--device", "cpu", "--workers", "0")
        assert r.returncode == 0, r.stderr
        head, *rows = [line.split("\t") for line in r.stdout.splitlines()]
        assert head[-1] == "status" and {c for _, c, _, _ in rows} <= {"ants", "bees"}  # the class is kept
        assert f"{sum(s == 'unknown' for *_, s in rows)} far from every training image" in r.stderr
        return sum(s == "unknown" for *_, s in rows) / len(rows)
    assert unknown_share(unseen) >= 0.8 and unknown_share(data / "val") <= 0.2
    plain = cli("predict", "--model", run, unseen, "--device", "cpu", "--workers", "0")
    assert "unknown" not in plain.stdout  # only with --reject
    spec = json.loads((run / "model.json").read_text())
    del spec["reject"]  # a run made before the rule was recorded
    (run / "model.json").write_text(json.dumps(spec))
    old = cli("predict", "--model", run, unseen, "--reject", "--device", "cpu", "--workers", "0")
    assert old.returncode == 2 and "records no rejection rule" in old.stderr and len(old.stderr.splitlines()) == 1


@pytest.mark.parametrize("held_out", range(5))
def test_with_one_class_held_out_most_of_it_is_unknown_and_most_known_images_kept(tmp_path, held_out):
    """Five classes of synthetic codes that overlap as real ones do (random labels, a ReLU; a
    linear head still ~100% right on them), one held out of training: the rule, set on half of the
    known val codes at 5%, keeps ~95% of the other half and flags most of the unseen class."""
    from pipeline.codes.store import read_codes
    from pipeline.codes.synthetic import Synthetic, write_synthetic_codes

    f = write_synthetic_codes(tmp_path / "c.h5", Synthetic(500, 600, 64, tuple("abcde"), 1.0, held_out,
                                                           overlap=True))
    c = read_codes(f)
    tr, va = c.splits["train"], c.splits["val"]
    known = va.codes[va.labels != held_out]
    half = len(known) // 2
    ref, rule = codes_rule(tr.codes[tr.labels != held_out], known[:half])
    kept = (nearest_distance(ref, known[half:]) <= rule["threshold"]).mean()
    flagged = (nearest_distance(ref, va.codes[va.labels == held_out]) > rule["threshold"]).mean()
    assert 0.88 <= kept <= 1.0 and flagged >= 0.9, (kept, flagged)
    assert (nearest_distance(ref, known[:half]) > rule["threshold"]).mean() == pytest.approx(0.05, abs=0.01)
