"""`audit` on synthetic codes: flipped labels ranked first, leaks found, an outlier on top, the CLI's
files and errors, the chunked neighbour search equal to the plain one, and exclusion lists."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from conftest import ROOT, write_synthetic_codes
from pipeline import UserError
from pipeline.audit.duplicates import duplicate_threshold
from pipeline.audit.findings import PAIR_COLUMNS, ROW_COLUMNS, Spec, audit_splits, write_audit
from pipeline.codes.neighbours import brute_force, cosine_both, top_k, unit_rows, whitened_rows, whitening
from pipeline.codes.store import SplitCodes, read_codes
from pipeline.images.exclude import check_exclusions, format_exclusions, read_exclusions

CLASSES = ("a", "b", "c", "d")


@pytest.fixture(autouse=True)
def one_thread():
    """BLAS threads on a shared two-core machine cost more than they save on these small fits."""
    with threadpool_limits(limits=1):
        yield


def overlapping(tmp_path, n_train=600, n_val=120, dim=32, sep=0.4, seed=0) -> dict[str, SplitCodes]:
    """Codes of four classes that overlap as real codes do (ReLU'd Gaussian blobs), read back."""
    f = write_synthetic_codes(tmp_path / "codes.h5", n_train=n_train, n_val=n_val, dim=dim, classes=CLASSES,
                              overlap=True, sep=sep, seed=seed)
    return read_codes(f).splits


def test_flipped_labels_rank_first(tmp_path):
    from sklearn.metrics import roc_auc_score

    splits = overlapping(tmp_path, sep=0.6)  # CV accuracy 82% on the noisy labels
    tr, rng = splits["train"], np.random.default_rng(1)
    flipped = np.zeros(len(tr.labels), bool)
    flipped[rng.choice(len(tr.labels), len(tr.labels) // 10, replace=False)] = True
    noisy = tr.labels.copy()
    noisy[flipped] = (noisy[flipped] + rng.integers(1, len(CLASSES), flipped.sum())) % len(CLASSES)
    splits["train"] = SplitCodes(tr.codes, noisy, tr.paths, [])
    a = audit_splits(splits, list(CLASSES))
    train = a.split_of == 0
    auroc = roc_auc_score(flipped, a.issues.score[train])
    assert auroc >= 0.9, auroc
    listed = a.issues.flagged[train]
    assert listed[flipped].mean() >= 0.9 and flipped[listed].mean() >= 0.4  # (0.98 and 0.53 with these seeds)


def perturbed(x: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A re-saved copy's code: the code plus noise of 25-60% of its centred length in a random
    direction (measured on hymenoptera/MobileNetV2: crop 90%, flip, JPEG q30 and half-size
    re-saves move a centred code by 41-61% at the median), then the ReLU."""
    u = rng.normal(size=x.shape)
    return np.maximum(x + rng.uniform(0.25, 0.6) * np.linalg.norm(x - centre) * u / np.linalg.norm(u), 0)


@pytest.mark.parametrize("exact_max", [50_000, 0], ids=["exact", "index"])
def test_leaks_found_with_precision(tmp_path, exact_max):
    """The same leaks through the exact search and through the FAISS index (codes.index)."""
    splits = overlapping(tmp_path, n_train=500, n_val=100, dim=64)
    tr, va, rng = splits["train"], splits["val"], np.random.default_rng(2)
    src = rng.choice(len(va.labels), 20, replace=False)
    copies = np.stack([perturbed(va.codes[i], tr.codes.mean(0), rng) for i in src]).astype(np.float32)
    paths = [f"train/{CLASSES[va.labels[i]]}/copy{j:02d}.jpg" for j, i in enumerate(src)]
    splits["train"] = SplitCodes(np.concatenate([tr.codes, copies]), np.concatenate([tr.labels, va.labels[src]]),
                                 tr.paths + paths, [])
    a = audit_splits(splits, list(CLASSES), Spec(exact_max=exact_max))
    index = a.rules["neighbour_index"]
    assert index["kind"] == "exact" if exact_max else index["whitened"]["kind"].startswith("faiss IVF")
    leaks = {(p, o) for p, s, o, os_, _ in a.pair_rows() if s != os_}
    truth = {(va.paths[i], paths[j]) for j, i in enumerate(src)}
    assert len(leaks & truth) >= 0.95 * len(truth), (len(leaks & truth), a.threshold)
    assert len(leaks & truth) >= 0.9 * len(leaks), sorted(leaks - truth)
    assert set(paths) <= set(a.excluded())  # the train copy goes, the val image stays
    assert not set(va.paths) & set(a.excluded())


def test_whitening_finds_copies_moved_along_the_directions_photos_vary_most():
    """Real re-saves (resize, JPEG, crop) move a code most along the directions in which photos
    differ most, and keep the image's fine detail: modelled here as 4 strong shared factors plus
    64-d image-specific detail, each copy moved along the factors by several nearest-neighbour
    distances. Centred cosine sees such a copy as a different image (finds none); the whitened
    search (the audit's) finds all 20, and nothing else."""
    rng, d = np.random.default_rng(5), 64
    factors = rng.normal(size=(4, d))

    def draw(n):
        y = rng.integers(0, 2, n)
        return (rng.normal(size=(n, 4)) * 6 + y[:, None]) @ factors / 2 + rng.normal(size=(n, d)), y

    (tr, ytr), (va, yva) = draw(400), draw(100)
    src = rng.choice(100, 20, replace=False)
    move = rng.normal(size=(20, 4)) @ factors
    copies = va[src] + 0.5 * 6 * np.sqrt(d) * move / np.linalg.norm(move, axis=1, keepdims=True)
    x = np.concatenate([tr, copies, va]).astype(np.float32)
    z = unit_rows(x, tr.mean(0))
    s, i = top_k(z, z, 1, same=True)
    at = np.arange(400, 420)
    assert ((s[at, 0] >= duplicate_threshold(s[:, 0])) & (i[at, 0] == 420 + src)).sum() <= 2  # centred: lost
    paths = [f"train/a/copy{j}.jpg" for j in range(20)]
    splits = {"train": SplitCodes(x[:420], np.concatenate([ytr, yva[src]]), [f"train/a/{j}.jpg" for j in range(400)]
                                  + paths, []),
              "val": SplitCodes(x[420:], yva, [f"val/a/{j}.jpg" for j in range(100)], [])}
    a = audit_splits(splits, ["a", "b"], Spec(c=1.0))
    truth = {(f"val/a/{j}.jpg", paths[n]) for n, j in enumerate(src)}
    assert {(p, o) for p, _, o, _, _ in a.pair_rows()} == truth, a.threshold
    assert a.rules["duplicates"]["whitened_dimensions"] == min(d, 420 // 2)


def test_whitening_and_both_searches():
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(300, 16)) * np.geomspace(10, 0.1, 16)).astype(np.float32) + 3
    mean, w = whitening(x[:100], block=32)
    assert w.shape == (16, 16) and whitening(x[:20])[1].shape == (16, 10) and whitening(x, rank=5)[1].shape[1] == 5
    assert np.allclose(np.cov(((x[:100] - mean) @ w).T), np.eye(16), atol=1e-3)
    z = whitened_rows(x, mean, w, block=64)
    assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    (ps, pi), (ws, wi) = cosine_both(x, z, 4, block=70)
    for (s, i), ref in (((ps, pi), unit_rows(x)), ((ws, wi), z)):
        s2, i2 = brute_force(ref, ref, 4, same=True)
        assert np.array_equal(i, i2) and np.allclose(s, s2, atol=1e-5)


def test_threshold_flags_about_one_distinct_image():
    rng = np.random.default_rng(3)
    for dim in (32, 128):
        x = np.maximum(rng.normal(size=(4000, dim)), 0)
        x = unit_rows(x, x.mean(0))
        s, _ = top_k(x, x, 1, same=True)
        assert (s[:, 0] >= duplicate_threshold(s[:, 0])).sum() <= 3


def test_outlier_ranks_first_and_csv_cells_are_safe(tmp_path):
    splits = overlapping(tmp_path, n_train=300, n_val=60, dim=128)
    va, rng = splits["val"], np.random.default_rng(4)
    odd = np.zeros((1, va.codes.shape[1]), np.float32)  # like a placeholder GIF: a few channels no class needs
    odd[0, rng.choice(odd.shape[1], 3, replace=False)] = 5.0
    splits["val"] = SplitCodes(np.concatenate([va.codes, odd]), np.append(va.labels, 0),
                               va.paths + ["=HYPERLINK(x).gif"], [])
    a = audit_splits(splits, list(CLASSES), Spec(c=1.0))
    assert a.paths[int(np.argmax(a.outlier))] == "=HYPERLINK(x).gif" and a.outlier.max() > 3.5
    files = write_audit(a, tmp_path / "out")
    rows = list(csv.reader(open(files["outliers.csv"])))
    assert rows[0] == list(ROW_COLUMNS) and rows[1][:2] == ["'=HYPERLINK(x).gif", "val"]
    scores = [float(r[4]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True)


def _audit_cli(*args):
    """`python -m pipeline audit ...`, with the stage registered here if pipeline/__main__.py lacks it."""
    shim = ("import sys, pipeline.__main__ as m; m.STAGES.setdefault('audit', ('pipeline.stages.audit', 'audit')); "
            "sys.exit(m.main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", shim, "audit", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_writes_the_files_and_refuses_a_missing_file(tmp_path):
    f = write_synthetic_codes(tmp_path / "c.h5", n_train=60, n_val=30, dim=8)
    r = _audit_cli("--features", f, "--out", tmp_path / "out", "--folds", 3)
    assert r.returncode == 0, r.stderr
    assert "label issues" in r.stdout and "outliers" in r.stdout
    for name, header in (("label_issues.csv", ROW_COLUMNS), ("outliers.csv", ROW_COLUMNS),
                         ("duplicates.csv", PAIR_COLUMNS)):
        assert (tmp_path / "out" / name).read_text().splitlines()[0] == ",".join(header)
    assert read_exclusions(tmp_path / "out" / "exclude.txt") == set()
    assert not list((tmp_path / "out").glob("*.tmp*"))
    r = _audit_cli("--features", tmp_path / "missing.h5", "--out", tmp_path / "out2")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
    r = _audit_cli("--features", f, "--folds", 1)
    assert r.returncode == 2 and "--folds" in r.stderr


@pytest.mark.parametrize("n,d,k,block", [(300, 16, 5, 64), (257, 8, 10, 50), (40, 4, 10, 7), (200, 32, 3, 4096)])
def test_chunked_neighbours_equal_brute_force(n, d, k, block):
    rng = np.random.default_rng(n)
    x = unit_rows(rng.normal(size=(n, d)), rng.normal(size=d))
    s, i = top_k(x, x, k, same=True, block=block)
    s2, i2 = brute_force(x, x, k, same=True)
    assert np.array_equal(i, i2) and np.allclose(s, s2, atol=1e-6)
    s, i = top_k(x[: n // 3], x[n // 4:], k, block=block)
    s2, i2 = brute_force(x[: n // 3], x[n // 4:], k)
    assert np.array_equal(i, i2) and np.allclose(s, s2, atol=1e-6)


def test_exclusion_lists_round_trip_and_bad_files_are_one_line_errors(tmp_path):
    f = tmp_path / "exclude.txt"
    f.write_text(format_exclusions(["train/a/1.jpg", "val/b c/2.jpg", "#odd.jpg", "x\ny.jpg"], ["made by a test"])
                 + "\n  train/a/3.jpg  \r\n# a comment\n")
    assert read_exclusions(f) == {"train/a/1.jpg", "val/b c/2.jpg", "#odd.jpg", "x\ny.jpg", "train/a/3.jpg"}
    check_exclusions({"train/a/1.jpg"}, ["train/a/1.jpg", "x"], "exclude.txt")
    with pytest.raises(UserError, match="1 path that the codes do not hold"):
        check_exclusions({"train/a/9.jpg"}, ["train/a/1.jpg"], "exclude.txt")
    (tmp_path / "bin").write_bytes(b"train/a.jpg\n\0\1")
    (tmp_path / "latin").write_bytes(b"train/a.jpg\ntrain/\xe9t\xe9.jpg\n")
    for bad, why in ((tmp_path / "missing.txt", "does not exist"), (tmp_path, "does not exist"),
                     (tmp_path / "bin", "binary"), (tmp_path / "latin", "line 2: not UTF-8")):
        with pytest.raises(UserError, match=why) as e:
            read_exclusions(bad)
        assert "\n" not in str(e.value)


def test_config_checked_and_audit_imports_only_lower_floors():
    from test_structure import _imports

    from pipeline.stages.audit import Config
    for bad in (dict(folds=1), dict(c=-1.0), dict(neighbours=0), dict(threshold=1.5), dict(block=0), dict(whiten=-1)):
        with pytest.raises(UserError):
            Config(features="x.h5", **bad)
    allowed = {"core", "images", "codes", "heads", "runs", "audit"}
    for path in sorted((ROOT / "pipeline" / "audit").glob("*.py")):
        assert len(path.read_text().splitlines()) <= 330
        for line, target in _imports(path):
            assert target.split(".")[0] in allowed | {"UserError"}, (path, line)


def test_an_audit_of_the_same_codes_and_settings_is_not_redone(tmp_path, capsys):
    """A sweep re-run audits every backbone again: the same codes with the same settings is a hit (at a
    million codes the audit costs minutes); other settings, or --force, audit again into the folder."""
    import json

    from pipeline.stages.audit import Config, audit

    feats, out = write_synthetic_codes(tmp_path / "c.h5", n_train=40, n_val=20, dim=8), tmp_path / "out"
    assert audit(Config(features=feats, out=out, folds=3)) is not None
    first = json.loads((out / "audit.json").read_text())
    assert first["inputs"]["folds"] == 3 and first["inputs"]["features"]
    assert audit(Config(features=feats, out=out, folds=3, jobs=2)) is None  # --jobs changes no finding
    assert "up to date" in capsys.readouterr().out
    assert audit(Config(features=feats, out=out, folds=4)) is not None
    assert json.loads((out / "audit.json").read_text())["inputs"]["folds"] == 4
    assert audit(Config(features=feats, out=out, folds=4, force=True)) is not None
    (out / "audit.json").write_text(json.dumps({k: v for k, v in first.items() if k != "inputs"}))
    assert audit(Config(features=feats, out=out, folds=3)) is not None  # an older audit records no inputs: redone


def test_acting_on_an_exclusion_list_is_one_step_and_recorded(tmp_path):
    import json

    from conftest import cli, make_folder
    from pipeline.codes.store import read_attrs, read_codes

    data = make_folder(tmp_path / "data", n_train=6, n_val=4)
    lst = tmp_path / "exclude.txt"
    lst.write_text("# from the audit\ntrain/ants/img001.jpg\n")
    full, less = tmp_path / "full.h5", tmp_path / "less.h5"
    for out, extra in ((full, []), (less, ["--exclude", lst])):
        r = cli("features", "--data", data, "--weights", "none", "--out", out, "--device", "cpu", "--workers", "0",
                *extra)
        assert r.returncode == 0, r.stderr
    c = read_codes(less)
    assert "train/ants/img001.jpg" not in c.splits["train"].paths and len(c.splits["train"].paths) == 11
    assert ("train/ants/img001.jpg", "excluded by exclude.txt") in c.splits["train"].skipped
    assert read_attrs(less)["fingerprint"] != read_attrs(full)["fingerprint"]
    r = cli("classify", "--features", full, "--data", data, "--head", "knn", "--exclude", lst, "--out",
            tmp_path / "runs", "--label-curve", "off", "--folds", "3")
    assert r.returncode == 0 and "leaving out 1 of 20 images" in r.stdout, r.stderr
    [run] = list((tmp_path / "runs").iterdir())
    m = json.loads((run / "metrics.json").read_text())
    assert run.name.endswith("-excluded") and m["n_train"] == 11 and m["short"] == "knn (1 excluded)"
    assert m["inputs"]["exclude"] == ["train/ants/img001.jpg"]
    r = cli("classify", "--features", less, "--data", data, "--head", "knn", "--out", tmp_path / "r2", "--label-curve",
            "off", "--folds", "3")
    assert r.returncode == 0, r.stderr  # codes made without the excluded image are still fresh for --data
    bad = tmp_path / "typo.txt"
    bad.write_text("train/ants/nope.jpg\n")
    r = cli("features", "--data", data, "--weights", "none", "--out", tmp_path / "x.h5", "--exclude", bad)
    assert r.returncode == 2 and "do not hold" in r.stderr


def test_the_report_shows_the_audit_as_your_data(tmp_path):
    from conftest import cli, make_folder

    data = make_folder(tmp_path / "data", n_train=8, n_val=4)
    feats, runs, audit, out = (tmp_path / n for n in ("f.h5", "runs", "audit", "report"))
    assert cli("features", "--data", data, "--weights", "none", "--out", feats, "--device", "cpu",
               "--workers", "0").returncode == 0
    assert cli("classify", "--features", feats, "--data", data, "--head", "knn", "--out", runs, "--label-curve", "off",
               "--folds", "3").returncode == 0
    assert cli("audit", "--features", feats, "--out", audit).returncode == 0
    (audit / "label_issues.csv").write_text("path,split,label,suggested,score\ntrain/ants/img001.jpg,train,ants,"
                                            "bees,0.9\n")  # one finding to show, with its image under DATA
    r = cli("report", "--runs", runs, "--out", out, "--audit", audit)
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    assert "## Your data" in md and "`train/ants/img001.jpg`" in md and "audit-suspects.png" in md
    assert "## Your data" not in (cli("report", "--runs", runs, "--out", tmp_path / "r2").returncode == 0
                                  and (tmp_path / "r2" / "report.md").read_text())


def test_grouped_folds_find_labels_flipped_on_every_copy_of_a_photo():
    """Five near-copies of each photo, one photo in ten mislabelled on all its copies: ungrouped folds
    learn each wrong label from the copy's siblings (and CV, fooled the same way, picks a weak C) so
    the flips hide; grouped folds score every copy with a model that never saw the photo. (On real
    MobileNetV2 codes of the grown hymenoptera set, 10% of photos flipped: AUROC 0.74-0.81 plain,
    0.98-0.99 grouped, docs/audit.md.)"""
    from sklearn.metrics import roc_auc_score

    from pipeline.audit.labels import fit_label_model, label_issues

    rng = np.random.default_rng(0)
    truth = np.arange(100) % 2
    photos = rng.normal(0, 1, (100, 64)) + truth[:, None] * 0.4
    X = np.repeat(photos, 5, axis=0) + rng.normal(0, 0.05, (500, 64))
    flipped = np.zeros(100, bool)
    flipped[rng.choice(100, 10, replace=False)] = True
    y, bad = np.repeat(np.where(flipped, 1 - truth, truth), 5), np.repeat(flipped, 5)
    groups = np.repeat(np.arange(100), 5)
    auroc = {}
    for name, g in (("plain", None), ("grouped", groups)):
        lm = fit_label_model(X, y, 2, folds=5, seed=0, groups=g)
        auroc[name] = roc_auc_score(bad, label_issues(lm.oof, y, lm.thresholds).score)
    assert auroc["grouped"] >= 0.9 and auroc["grouped"] > auroc["plain"] + 0.05, auroc


def test_label_model_past_its_fit_size_fits_subsamples_and_scores_every_row(tmp_path, monkeypatch):
    from pipeline.audit import labels
    from pipeline.audit.labels import fit_label_model

    monkeypatch.setattr(labels, "FIT_MAX", 300)
    tr = overlapping(tmp_path, n_train=900, n_val=10, sep=0.8)["train"]
    lm = fit_label_model(tr.codes, tr.labels, len(CLASSES), folds=3)
    assert "subsample of 300 of 900 train rows" in lm.how, lm.how
    assert lm.oof.shape == (900, 4) and np.allclose(lm.oof.sum(1), 1)  # every row held out once
    assert (lm.oof.argmax(1) == tr.labels).mean() > 0.5  # it learned something (4 classes)


def test_a_groups_file_leaving_a_class_in_one_group_is_named_before_any_fit(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 6)
    paths = [f"train/{'ab'[c]}/{i}.jpg" for i, c in enumerate(y)]
    tr = SplitCodes(rng.normal(0, 1, (12, 8)).astype(np.float32) + y[:, None], y, paths, [])
    (tmp_path / "g.csv").write_text("path,group\n" + "".join(f"{p},one\n" for p, c in zip(paths, y) if c == 0))
    with pytest.raises(UserError, match=r"'ants' \(6 images, 1 group\).*--groups") as e:
        audit_splits({"train": tr}, ["ants", "bees"], Spec(groups=str(tmp_path / "g.csv"), folds=3))
    assert "bees" not in str(e.value)
