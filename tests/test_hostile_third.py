"""Hostile inputs, round three (issue 34): named pipes, outputs that would replace inputs, two
writers on one run, exclusion lists and group files that must round-trip, flags that are not
numbers, and the folder shapes people download (Kaggle, Roboflow, torchvision, TensorFlow, a
camera). Each is a one-line error (exit 2), a recorded skip, or a correct result."""
from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from conftest import cli, file_tree, make_image, touch, write_synthetic_codes
from pipeline import UserError
from pipeline.images.scan import scan as scan_folder


def scan(root, splits=("auto",), fractions=None):
    """As the stages scan by default (--splits auto)."""
    return scan_folder(root, splits, fractions)


def one_line_error(r, says: str) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ---------------------------------------------------------------------------------------------
# 1. a named pipe among the images

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("module", ["pipeline.images.decode", "pipeline.export.standalone"])
def test_a_named_pipe_is_skipped_as_not_a_regular_file_never_opened(tmp_path, module):
    import importlib

    decode = importlib.import_module(module)
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    said = []

    def load():
        try:
            decode.load_rgb(fifo)
        except decode.BadImage as e:
            said.append(str(e))
    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # it opened the pipe: give it a writer so the thread ends, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("load_rgb opened a named pipe and waited for a writer")
    assert said and "not a regular file" in said[0]


# ---------------------------------------------------------------------------------------------
# 2. predict --csv onto the run's record or an input

def test_predict_csv_is_never_a_file_of_the_model_folder_or_an_input(tmp_path):
    from pipeline.stages.predict import check_csv_apart

    run, img = tmp_path / "run", make_image(tmp_path / "imgs" / "a.jpg", (200, 40, 40))
    (run / "sub").mkdir(parents=True)
    for bad, says in ((run / "metrics.json", "inside the model folder"), (run / "sub" / "x.csv", "inside the model"),
                      (img, "one of the inputs"), (tmp_path / "imgs" / "." / "a.jpg", "one of the inputs")):
        with pytest.raises(UserError, match=says):
            check_csv_apart(str(bad), run, [img])
    check_csv_apart(str(tmp_path / "rows.csv"), run, [img])  # anywhere else is fine


# ---------------------------------------------------------------------------------------------
# 3. two classify runs into one folder at once

def test_a_second_classify_on_the_same_run_folder_is_refused_not_lost(tmp_path):
    from filelock import FileLock

    from pipeline.codes.store import read_codes
    from pipeline.stages import classify as C
    feats = write_synthetic_codes(tmp_path / "c.h5", n_train=40, n_val=20, dim=8)
    cfg = C.Config(features=feats, head="knn", out=tmp_path / "runs", folds=3, label_curve="off")
    where = C.run_dir(cfg, read_codes(feats), "knn")
    with FileLock(where.with_name(f".{where.name}.lock")):  # what the first classify holds while it fits and writes
        with pytest.raises(UserError, match="another classify run is writing"):
            C.classify(cfg)
    assert not where.exists()
    assert C.classify(cfg) == [where] and (where / "metrics.json").is_file()
    assert sorted(p.name for p in where.parent.iterdir()) == [where.name]  # no lock file left among the runs


# ---------------------------------------------------------------------------------------------
# 7, 8, 15. exclusion lists

def test_every_path_round_trips_through_an_exclusion_list(tmp_path):
    from pipeline.images.exclude import format_exclusions, read_exclusions

    names = ["#ants/a.jpg", "# b.jpg", '"q".jpg', " lead.jpg", "x\ny.jpg", "tab\t.jpg", "a\u2028b.jpg", "ok.jpg"]
    f = tmp_path / "exclude.txt"
    f.write_text(format_exclusions(names, ["a comment"]), encoding="utf-8")
    assert read_exclusions(f) == set(names)
    f.write_text('ok.jpg\n"unclosed.jpg\n', encoding="utf-8")
    with pytest.raises(UserError, match="line 2: a line starting with"):
        read_exclusions(f)


@pytest.fixture
def codes(tmp_path):
    from pipeline.codes.store import read_codes
    return read_codes(write_synthetic_codes(tmp_path / "c.h5", n_train=12, n_val=6, dim=4))


def test_an_exclusion_that_empties_a_class_or_names_nothing_is_refused_first(codes, tmp_path):
    from pipeline.codes.matching import excluded

    lst = tmp_path / "x.txt"
    va = codes.splits["val"]
    lst.write_text("\n".join(p for p, y in zip(va.paths, va.labels) if y == 1))
    with pytest.raises(UserError, match=f"leaves class {codes.classes[1]!r} no val image"):
        excluded(codes, str(lst))
    lst.write_text("# the audit found nothing\n\n")
    with pytest.raises(UserError, match="names no image"):
        excluded(codes, str(lst))


def test_a_list_the_features_stage_already_applied_is_accepted_and_counted(codes, tmp_path, capsys):
    from pipeline.codes.matching import excluded
    from pipeline.codes.store import without_paths

    first, second = codes.splits["train"].paths[:2]
    less = without_paths(codes, {first}, "excluded by x.txt")  # as features --exclude x.txt leaves it
    lst = tmp_path / "x.txt"
    lst.write_text(f"{first}\n{second}\n")
    out = excluded(less, str(lst))
    assert first not in out.splits["train"].paths and second not in out.splits["train"].paths
    said = capsys.readouterr().out
    assert "leaving out 1 of" in said and "1 more already excluded when the features were made" in said


def test_features_exclude_of_a_whole_class_and_nan_shares_are_refused_at_once(tmp_path):
    from pipeline.images.exclude import apply_exclusions
    from pipeline.images.splits import parse_fractions

    root = file_tree(tmp_path / "d", ("train", "val"), n=3)
    lst = tmp_path / "x.txt"
    lst.write_text("".join(f"train/bees/bees{i:02d}.jpg\n" for i in range(3)))
    with pytest.raises(UserError, match="leaves class 'bees' no train image"):
        apply_exclusions(scan(root), str(lst))
    for bad in ("nan,0.5,0.5", "inf,0,0", "0.7,nan,0.3"):
        with pytest.raises(UserError, match="--split takes"):
            parse_fractions(bad)


# ---------------------------------------------------------------------------------------------
# 16, 17. one training image; a hidden class folder

def test_a_class_with_one_training_image_is_named(tmp_path):
    from pipeline.images.scan import check_classes

    with pytest.raises(UserError, match="class 'bees' has a single training image"):
        check_classes([0, 0, 1], ["ants", "bees"], "f.h5 (train)", least=2)
    check_classes([0, 0, 1], ["ants", "bees"], "f.h5 (train)")  # fine-tuning needs no CV folds


def test_a_hidden_class_folder_is_listed_as_ignored(tmp_path):
    root = file_tree(tmp_path / "d", ("train", "val"), n=2)
    touch(root / "train" / ".x" / "a.jpg")
    s = scan(root)
    assert s.classes == ["ants", "bees"]
    assert ("train/.x", "hidden folder: not a class, ignored") in s.splits["train"].skipped


# ---------------------------------------------------------------------------------------------
# Folder shapes people download (docs/reliability.md#folder-shapes)

@pytest.mark.parametrize("folders,splits", [
    (("train", "val"), ["train", "val"]),  # torchvision ImageFolder, the tutorial's hymenoptera
    (("train", "val", "test"), ["train", "val", "test"]),
    (("train", "valid", "test"), ["train", "val", "test"]),  # Roboflow's folder export
    (("Training", "Validation"), ["train", "val"]),  # capitalised, as many Kaggle sets
])
def test_split_folders_are_found_by_name_case_and_alias(tmp_path, folders, splits):
    s = scan(file_tree(tmp_path / "d", folders))
    assert list(s.splits) == splits and not s.rule
    assert all({r.label for r in sp.items} == {0, 1} for sp in s.splits.values())


def test_train_and_test_without_val_carve_val_from_train_and_keep_test(tmp_path):
    root = file_tree(tmp_path / "kaggle", ("train", "test"), n=20)
    s = scan(root)
    assert list(s.splits) == ["train", "val", "test"] and s.rule.startswith("val-from-train")
    val = {r.path for r in s.splits["val"].items}
    assert len(val) == 6 and all(p.startswith("train/") for p in val)  # 15% of each class's 20
    assert {r.label for r in s.splits["val"].items} == {0, 1}
    assert not val & {r.path for r in s.splits["train"].items}
    assert {r.path for r in s.splits["test"].items} == {f"test/{c}/{c}{i:02d}.jpg" for c in ("ants", "bees")
                                                        for i in range(20)}
    assert scan(root).digest() == s.digest()  # the same every time: the stages agree on it
    assert scan(root, ("auto",), (0.6, 0.3, 0.1)).digest() != s.digest()  # --split's val share is recorded
    assert "val carved from train" in s.split_note()
    touch(root / "train" / "bees" / "new.jpg")
    assert len(val ^ {r.path for r in scan(root).splits["val"].items}) <= 2  # a new image moves (almost) nothing


def test_train_alone_is_split_automatically(tmp_path):
    s = scan(file_tree(tmp_path / "d", ("train",), n=10))
    assert list(s.splits) == ["train", "val", "test"] and s.rule.startswith("auto")
    assert sum(len(sp.items) for sp in s.splits.values()) == 20


def _camera(root):
    touch(root / "DCIM" / "100APPLE" / "IMG_0001.JPG")
    return root


def _loose(root, folder):
    touch(root / "train" / "ants" / "a.jpg")
    touch(root / "train" / "bees" / "b.jpg")
    for i in range(3):
        touch(root / folder / f"cat.{i}.jpg")
    return root


@pytest.mark.parametrize("make,says", [
    (lambda r: file_tree(r, ("val", "test")), "but no train/"),
    (lambda r: file_tree(r, ("train", "val", "valid")), "which is val?"),
    (lambda r: _loose(r, "test"), "an unlabelled test set"),
    (lambda r: (touch(r / "train" / "cat.1.jpg"), touch(r / "train" / "dog.1.jpg")), "labels in file names"),
    (lambda r: (touch(r / "train" / "_classes.csv", b"filename, ants, bees\n"), touch(r / "train" / "a.jpg")),
     "Roboflow's CSV export"),
    (_camera, "a camera's or phone's export"),
    (lambda r: touch(r / "100APPLE" / "IMG_0001.JPG"), "a camera's or phone's export"),
    (lambda r: [touch(r / f"IMG_{i}.jpg") for i in range(3)], "holds images but no class folders"),
])
def test_shapes_without_unambiguous_labels_are_one_line_errors_with_the_fix(tmp_path, make, says):
    root = tmp_path / "d"
    root.mkdir()
    make(root)
    with pytest.raises(UserError, match=says) as e:
        scan(root)
    assert "\n" not in str(e.value)


def test_a_carved_class_needs_two_train_images_and_is_named(tmp_path):
    root = file_tree(tmp_path / "d", ("test",), n=2)
    touch(root / "train" / "ants" / "a.jpg")
    touch(root / "train" / "bees" / "b1.jpg")
    touch(root / "train" / "bees" / "b2.jpg")
    with pytest.raises(UserError, match="class 'ants' has 1 usable train image"):
        scan(root)


def test_a_train_and_test_folder_runs_features_classify_and_report_with_the_verdict_on_test(tmp_path):
    colors = {"ants": (200, 40, 40), "bees": (40, 40, 200)}
    for split, n in (("train", 10), ("test", 4)):
        for c, col in colors.items():
            for i in range(n):
                make_image(tmp_path / "kaggle" / split / c / f"{i}.jpg", col, size=(40, 32), seed=i)
    data, feats, runs = tmp_path / "kaggle", tmp_path / "f.h5", tmp_path / "runs"
    r = cli("features", "--data", data, "--weights", "none", "--out", feats, "--device", "cpu", "--workers", "0",
            "--resize", "32", "--crop", "32")
    assert r.returncode == 0 and "val carved from train" in r.stdout, r.stderr
    for head in ("knn", "softmax"):
        r = cli("classify", "--features", feats, "--data", data, "--head", head, "--out", runs, "--label-curve", "off",
                "--folds", "3")
        assert r.returncode == 0, r.stderr
    r = cli("report", "--runs", runs, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    verdict = json.loads((tmp_path / "report" / "verdict.json").read_text())
    assert verdict["split"] == "test" and verdict["test"]["n"] == 8


# ---------------------------------------------------------------------------------------------
# 4, 5. report --audit

def test_report_audit_must_be_a_whole_audit_of_the_same_dataset(tmp_path):
    from pipeline.report.your_data import AUDIT_FILES, check_audit

    audit = tmp_path / "audit"
    for where, says in ((tmp_path / "missing", "is missing"), (touch(tmp_path / "file"), "is a file")):
        with pytest.raises(UserError, match=says):
            check_audit(where, "hym", ["ants", "bees"])
    audit.mkdir()
    with pytest.raises(UserError, match="not a whole audit folder"):  # never "0 label issues" from no files
        check_audit(audit, "hym", ["ants", "bees"])
    for f in AUDIT_FILES:
        touch(audit / f, b"path\n")
    (audit / "audit.json").write_text(json.dumps({"dataset": "flowers", "classes": ["daisy", "rose"]}))
    with pytest.raises(UserError, match="audits dataset 'flowers'"):
        check_audit(audit, "hym", ["ants", "bees"])
    (audit / "audit.json").write_text(json.dumps({"dataset": "hym", "classes": ["ants", "bees"]}))
    check_audit(audit, "hym", ["ants", "bees"])
    (audit / "audit.json").write_text(json.dumps({"source": "f.h5"}))  # an older audit: checked by its images
    (audit / "outliers.csv").write_text("path,split,label,suggested,score\nval/cats/1.jpg,val,cats,dogs,0.9\n")
    with pytest.raises(UserError, match="names none of the runs' val images"):
        check_audit(audit, "hym", ["ants", "bees"], {"val/ants/1.jpg"})
    check_audit(audit, "hym", ["ants", "bees"], {"val/cats/1.jpg"})


# ---------------------------------------------------------------------------------------------
# 9, 10, 11. the audit's own files as --groups

def test_the_audits_duplicates_csv_round_trips_into_groups_whatever_the_names(tmp_path):
    from pipeline.audit.findings import PAIR_COLUMNS, _csv
    from pipeline.images.groups import group_ids, read_groups

    paths = ["=a.jpg", "+b.jpg", "-c.jpg", "@d.jpg", "e.jpg"]
    dup = tmp_path / "duplicates.csv"
    _csv(dup, PAIR_COLUMNS, [("=a.jpg", "train", "+b.jpg", "val", 0.99), ("-c.jpg", "train", "@d.jpg", "train", 0.98)],
         4)
    assert "'=a.jpg" in dup.read_text()  # written escaped for spreadsheets...
    ids = group_ids(paths, read_groups(dup), "dup")  # ...and read back as the paths they are
    assert ids[0] == ids[1] != ids[2] == ids[3] and len(set(ids)) == 3
    _csv(dup, PAIR_COLUMNS, [], 4)  # the audit found no pairs: no groups, not an error
    assert len(set(group_ids(paths, read_groups(dup), "dup"))) == 5


def test_a_blank_group_is_a_group_of_one(tmp_path, capsys):
    from pipeline.images.groups import group_ids, read_groups

    g = tmp_path / "g.csv"
    g.write_text("path,group\na.jpg,x\nb.jpg,x\nc.jpg,\nd.jpg, \n")
    ids = group_ids(["a.jpg", "b.jpg", "c.jpg", "d.jpg"], read_groups(g), "g")
    assert ids[0] == ids[1] and len(set(ids)) == 3  # c and d apart, not one group "g:"
    assert "2 rows without a group" in capsys.readouterr().out


def test_a_header_with_spaces_after_the_commas_still_names_the_groups(tmp_path):
    from pipeline.images.groups import read_groups

    g = tmp_path / "g.csv"
    g.write_text("path, group\na.jpg, x\nb.jpg, x\n")  # the columns matched stripped: so must the rows' keys
    assert read_groups(g) == {"a.jpg": "g:x", "b.jpg": "g:x"}


# ---------------------------------------------------------------------------------------------
# 12. learning rates that are not numbers, and a run that diverges

@pytest.mark.parametrize("settings,says", [({"lr": float("nan")}, "--lr must be a finite rate"),
                                           ({"lr": float("inf")}, "--lr must be a finite rate"),
                                           ({"tune_lr": True, "lr_grid": "0.001,inf"}, "--lr-grid"),
                                           ({"tune_lr": True, "lr_grid": "nan"}, "--lr-grid"),
                                           ({"gamma": float("nan")}, "--gamma")])
def test_non_finite_rates_are_refused(tmp_path, settings, says):
    from pipeline.stages.finetune import Config

    with pytest.raises(UserError, match=says):
        Config(data=tmp_path, **settings)


def test_a_diverged_fine_tune_ends_in_one_line(tmp_path):
    from conftest import make_folder

    data = make_folder(tmp_path / "data", n_train=8, n_val=2, size=(40, 32))
    r = cli("finetune", "--data", data, "--weights", "none", "--epochs", "2", "--lr", "1e30", "--out",
            tmp_path / "runs", "--device", "cpu", "--workers", "0", "--batch-size", "4", "--resize", "36",
            "--crop", "32")
    one_line_error(r, "training diverged at epoch 1")


# ---------------------------------------------------------------------------------------------
# 13. a doctored rejection rule

def test_a_doctored_rejection_rule_is_refused_in_one_line(tmp_path):
    from pipeline.runs.scoring import Source, check_rule, reject_reference

    src = Source(tmp_path, reject=True)
    for t in (float("nan"), "0.3", None, True, float("inf")):
        with pytest.raises(UserError, match="not a finite number"):
            check_rule(src, {"reject": {"rule": "r", "threshold": t}})
    assert check_rule(src, {"reject": {"rule": "r", "threshold": 0.3}})["threshold"] == 0.3
    np.save(tmp_path / "reject.npy", np.ones((5, 7), np.float16))
    spec = {"reject": {"rule": "r", "threshold": 0.3, "file": "reject.npy"}}
    with pytest.raises(UserError, match=r"of 8 values \(it holds an array of shape \(5, 7\)\)"):
        reject_reference(src, spec, dim=8)
    assert reject_reference(src, spec, dim=7).shape == (5, 7)


# ---------------------------------------------------------------------------------------------
# 14. --out a link to nothing

def test_an_out_folder_that_is_a_dangling_link_is_one_line(tmp_path):
    from pipeline.core.files import check_out_folder
    from pipeline.stages.audit import Config, audit

    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(UserError, match="is a link to .*which does not exist"):
        check_out_folder(link)
    feats = write_synthetic_codes(tmp_path / "c.h5", n_train=30, n_val=10, dim=4)
    with pytest.raises(UserError, match="which does not exist"):
        audit(Config(features=feats, out=link))
    assert not (tmp_path / "gone").exists()


def test_a_manifest_of_train_and_test_rows_carves_val_as_the_folder_does(tmp_path):
    root = file_tree(tmp_path / "d", ("train", "test"), n=10)
    rows = [f"{p.relative_to(root).as_posix()},{p.parent.name},{'Training' if p.parts[-3] == 'train' else 'test'}"
            for p in sorted(root.rglob("*.jpg"))]
    (root / "list.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    m, folder = scan(root / "list.csv"), scan(root)
    assert list(m.splits) == ["train", "val", "test"] and m.rule == folder.rule
    assert {n: [r.path for r in sp.items] for n, sp in m.splits.items()} == \
        {n: [r.path for r in sp.items] for n, sp in folder.splits.items()}
    assert "val carved from train" in m.split_note()


def test_a_refused_classify_leaves_the_holders_lock_in_place(tmp_path):
    from filelock import FileLock

    from pipeline.runs.folder import locked
    run = tmp_path / "runs" / "knn"
    lock = run.with_name(".knn.lock")
    with locked(run, "classify run"):
        assert lock.is_file()
        with pytest.raises(UserError, match="another classify run"):
            with locked(run, "classify run"):
                pass
        assert lock.is_file() and not FileLock(lock, timeout=0).is_locked  # still there, still held by us
    assert not lock.exists()


def _roboflow(root, splits=("train", "valid", "test"), extra=""):
    for split in splits:
        rows = ["filename, ants, bees"]
        for i in range(6):
            name = f"{i}_jpg.rf.{split}.jpg"
            touch(root / split / name)
            rows.append(f"{name},{int(i % 2 == 0)},{int(i % 2 == 1)}")
        (root / split / "_classes.csv").write_text("\n".join(rows) + "\n" + (extra if split == "train" else ""))
    return root


def test_roboflows_csv_export_is_read_as_its_classes_csv_says(tmp_path):
    s = scan(_roboflow(tmp_path / "rf"))
    assert list(s.splits) == ["train", "val", "test"] and s.classes == ["ants", "bees"] and not s.rule
    assert [(r.path, r.label) for r in s.splits["val"].items][:2] == [("valid/0_jpg.rf.valid.jpg", 0),
                                                                     ("valid/1_jpg.rf.valid.jpg", 1)]
    carved = scan(_roboflow(tmp_path / "rf2", ("train", "test")))
    assert carved.rule.startswith("val-from-train") and len(carved.splits["val"].items) == 2


@pytest.mark.parametrize("extra,says", [("x.jpg,1,1\n", "line 8: 'x.jpg' has 2 classes marked"),
                                        ("../../etc/passwd,1,0\n", "line 8: '../../etc/passwd' is not a file name"),
                                        ("x.jpg,1\n", "line 8: 1 class cells")])
def test_a_roboflow_row_that_is_not_one_label_of_one_file_names_its_line(tmp_path, extra, says):
    with pytest.raises(UserError, match=says):
        scan(_roboflow(tmp_path / "rf", extra=extra))


def test_an_archive_unpacked_one_level_deep_names_the_folder_to_give(tmp_path):
    file_tree(tmp_path / "d" / "hymenoptera_data", ("train", "val"), n=2)
    with pytest.raises(UserError, match="give --data .*hymenoptera_data"):
        scan(tmp_path / "d")


def test_codes_of_a_roboflow_export_stay_fresh_for_classify(tmp_path):
    """classify re-scans --data with the split names the codes hold: the same images again."""
    from pipeline.codes.matching import check_fresh
    from pipeline.codes.store import read_codes
    from pipeline.stages.features import Config, extract

    root = tmp_path / "rf"
    for split in ("train", "valid", "test"):
        rows = ["filename, ants, bees"]
        for i in range(4):
            make_image(root / split / f"{i}.jpg", (200, 40, 40) if i % 2 else (40, 40, 200), size=(36, 32))
            rows.append(f"{i}.jpg,{1 - i % 2},{i % 2}")
        (root / split / "_classes.csv").write_text("\n".join(rows) + "\n")
    out = extract(Config(data=root, backbone="resnet18", weights="none", workers=0, device="cpu",
                         out=str(tmp_path / "f.h5"), resize=32, crop=32))
    codes = read_codes(out)
    assert list(codes.splits) == ["train", "val", "test"]
    check_fresh(codes, root)
