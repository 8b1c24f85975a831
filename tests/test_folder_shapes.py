"""Split folders under the names people download them with (docs/reliability.md#folder-shapes):
Kaggle's seg_train/seg_train/, training_set/, Training/, train_images/, an unlabelled seg_pred/
beside them; and class folders whose names only start like a split stay classes."""
from __future__ import annotations

from functools import partial

import pytest

from conftest import file_tree, touch
from pipeline import UserError
from pipeline.images.scan import scan as scan_folder
from pipeline.images.shapes import bare, resolve, split_of


def scan(root, splits=("auto",)):
    return scan_folder(root, splits)


_tree = partial(file_tree, n=10)


def test_a_split_name_is_a_whole_alias_after_one_known_prefix_and_suffix():
    named = {"seg_train": "train", "Training_set": "train", "test_set": "test", "train_images": "train",
             "TESTING": "test", "valid_set": "val", "seg_test": "test"}
    assert {name: split_of(name) for name in named} == named
    for cls in ("test_tube", "testing_kit", "training_wheels", "seg_", "_set", "pretest", "train2", "seg_pred"):
        assert split_of(cls) is None, cls
    assert bare("seg_pred") == "pred" and bare("Test_Tube") == "test_tube"


def test_kaggles_intel_layout_is_entered_and_its_prediction_folder_ignored_in_one_line(tmp_path, capsys):
    root = _tree(tmp_path / "intel", ("seg_train/seg_train", "seg_test/seg_test"), ("buildings", "forest"))
    for i in range(3):
        touch(root / "seg_pred" / "seg_pred" / f"{i}.jpg")
    s = scan(root)
    out = capsys.readouterr().out.splitlines()
    assert s.classes == ["buildings", "forest"] and list(s.splits) == ["train", "val", "test"]
    assert s.rule.startswith("val-from-train")  # no val folder: carved from train, test kept
    assert all(r.path.startswith("seg_test/seg_test/") for r in s.splits["test"].items)
    assert all(r.path.startswith("seg_train/seg_train/") for sp in ("train", "val") for r in s.splits[sp].items)
    assert len(s.splits["test"].items) == 20 and not any("seg_pred" in r.path for sp in s.splits.values()
                                                         for r in sp.items)
    [line] = [o for o in out if "seg_pred" in o]
    assert "seg_pred/ ignored: unlabelled images to predict on" in line and "cnncodes predict" in line
    # splits named (as classify re-scans the splits the codes hold): the same folders
    assert [resolve(root, n) for n in ("train", "test")] == ["seg_train/seg_train", "seg_test/seg_test"]


@pytest.mark.parametrize("folders,splits", [
    (("training_set", "test_set"), ["train", "val", "test"]),  # cats-and-dogs style: val carved
    (("Training", "Testing"), ["train", "val", "test"]),  # brain-tumour style
    (("train_images", "val_images"), ["train", "val"]),
    (("seg_train", "seg_test"), ["train", "val", "test"]),  # without the double nesting
    (("training_set/training_set", "test_set/test_set"), ["train", "val", "test"]),  # Kaggle's zip inside a zip
])
def test_split_folders_under_other_names_are_found(tmp_path, folders, splits):
    s = scan(_tree(tmp_path / "d", folders))
    assert list(s.splits) == splits and s.classes == ["ants", "bees"]
    assert sum(len(sp.items) for sp in s.splits.values()) == 20 * len(folders)


def test_a_class_named_like_a_split_stays_a_class(tmp_path, capsys):
    root = _tree(tmp_path / "d", ("",), ("testing_kit", "test_tube", "training_wheels"))
    s = scan(root)
    assert s.classes == ["test_tube", "testing_kit", "training_wheels"] and s.rule.startswith("auto")
    assert "ignored" not in capsys.readouterr().out
    # beside real split folders too: a class folder inside train/ is never a split
    s = scan(_tree(tmp_path / "e", ("train", "val"), ("testing_kit", "bees")))
    assert s.classes == ["bees", "testing_kit"] and list(s.splits) == ["train", "val"]


def test_a_double_nesting_is_entered_only_when_the_inner_folder_is_alone_and_of_the_same_name(tmp_path):
    root = _tree(tmp_path / "d", ("train/train", "val"))
    touch(root / "train" / "notes.txt")  # something beside it: train/ is read as it is, train/train as a class
    with pytest.raises(UserError, match="class folders differ between splits"):
        scan(root)


def test_two_folders_for_one_split_under_other_names_is_still_a_question(tmp_path):
    with pytest.raises(UserError, match="which is train?") as e:
        scan(_tree(tmp_path / "d", ("train", "training_set", "test")))
    assert "\n" not in str(e.value)


def test_other_folders_beside_the_splits_are_named_as_not_read(tmp_path, capsys):
    root = _tree(tmp_path / "d", ("train", "val"))
    touch(root / "__MACOSX" / "train" / "._x.jpg")
    scan(root)
    assert "'__MACOSX/ ignored: not a split folder" in capsys.readouterr().out.replace(f"{str(root)!r}: ", "'")


def test_codes_of_kaggles_nested_layout_stay_fresh_for_classify(tmp_path, capsys):
    """features on seg_train/seg_train + seg_test/seg_test (+ seg_pred), then classify's re-scan: the same images."""
    from conftest import make_image
    from pipeline.codes.matching import check_fresh
    from pipeline.codes.store import read_codes
    from pipeline.stages.features import Config, extract

    root = tmp_path / "intel"
    for folder, n in (("seg_train/seg_train", 6), ("seg_test/seg_test", 2)):
        for c, col in (("buildings", (200, 40, 40)), ("forest", (40, 160, 40))):
            for i in range(n):
                make_image(root / folder / c / f"{i}.jpg", col, size=(36, 32), seed=i)
    make_image(root / "seg_pred" / "seg_pred" / "0.jpg", (90, 90, 90), size=(36, 32))
    out = extract(Config(data=root, backbone="resnet18", weights="none", workers=0, device="cpu",
                         out=str(tmp_path / "f.h5"), resize=32, crop=32))
    codes = read_codes(out)
    assert codes.classes == ["buildings", "forest"] and list(codes.splits) == ["train", "val", "test"]
    assert sum(len(s.labels) for s in codes.splits.values()) == 16
    check_fresh(codes, root)
    assert "seg_pred/ ignored" in capsys.readouterr().out


def test_a_data_folder_holding_only_a_folder_of_its_own_name_is_entered(tmp_path):
    flowers = _tree(tmp_path / "flowers" / "flowers", ("",), ("daisy", "rose"))  # plain class folders, one level in
    s = scan(tmp_path / "flowers")
    assert s.classes == ["daisy", "rose"] and s.rule.startswith("auto")
    assert all(r.path.startswith("flowers/") for sp in s.splits.values() for r in sp.items)
    assert flowers.is_dir()
    nested = _tree(tmp_path / "hymenoptera_data" / "hymenoptera_data", ("train", "val"))
    for splits in (("auto",), ("train", "val")):  # as features finds them, and as classify re-scans them
        s = scan(nested.parent, splits)
        assert list(s.splits) == ["train", "val"] and s.splits["val"].items[0].path.startswith("hymenoptera_data/val/")
    # another name one level in is still the one-line error naming the folder to give
    _tree(tmp_path / "d" / "other", ("train", "val"))
    with pytest.raises(UserError, match="give --data .*other"):
        scan(tmp_path / "d")
