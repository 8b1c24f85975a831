"""cnncodes sweep: several backbones' codes, their heads, one report and verdict across backbone x head;
the line-up parsed, images compared only where every backbone coded them, and screening's test."""
from __future__ import annotations

import json

import pytest

from conftest import make_folder
from pipeline import UserError
from pipeline.codes.lineup import Entry, parse_lineup
from pipeline.runs import screen


def test_lineup_parses_name_weights_pairs_and_refuses_repeats():
    assert parse_lineup("resnet18=none, timm/test_resnet") == (Entry("resnet18", "none"),
                                                             Entry("timm/test_resnet", "DEFAULT"))
    for bad in ("", "resnet18=none resnet18=none", "=none"):
        with pytest.raises(UserError):
            parse_lineup(bad)


def test_screen_drops_only_what_the_sample_separates_as_worse():
    n = 60
    good = {f"v{i}": True for i in range(n)}
    close = {f"v{i}": i != 3 for i in range(n)}  # one image apart: within noise
    bad = {f"v{i}": i % 2 == 0 for i in range(n)}  # 30 worse: separable
    d = screen.decide({"a": close, "b": good, "c": bad})
    assert d["b"]["best"] and not d["b"]["dropped"]
    assert not d["a"]["dropped"] and d["c"]["dropped"] and d["c"]["p_holm"] < screen.ALPHA
    assert screen.auto_size(-1, 500, 3) == 0 and screen.auto_size(-1, 5000, 3) == screen.AUTO_N
    assert screen.auto_size(-1, 5000, 1) == 0 and screen.auto_size(40, 10, 2) == 40


def test_sample_is_stratified_and_the_same_every_time(tmp_path):
    from pipeline.images.scan import scan

    s = scan(make_folder(tmp_path / "d", n_train=10, n_val=6), ("auto",))
    a, b = screen.sample(s, 8, "train", "val", 0), screen.sample(s, 8, "train", "val", 0)
    assert [r.path for r in a.splits["train"].items] == [r.path for r in b.splits["train"].items]
    labels = [r.label for r in a.splits["train"].items]
    assert len(labels) == 8 and labels.count(0) == labels.count(1) == 4
    assert len(a.splits["val"].items) == 8 and set(a.splits) == {"train", "val"}


def test_sweep_compares_every_backbone_and_head_on_the_same_images(tmp_path, monkeypatch):
    from pipeline.stages.sweep import Config, sweep

    data = make_folder(tmp_path / "data", n_train=8, n_val=5)
    monkeypatch.chdir(tmp_path)
    cfg = Config(data=data, backbones="timm/test_efficientnet=none timm/test_resnet=none", head="softmax",
                 out=tmp_path / "runs", report=tmp_path / "report", device="cpu", workers=0, screen=4)
    record = sweep(cfg)
    assert [b["backbone"] for b in record["backbones"]] == ["timm/test_efficientnet", "timm/test_resnet"]
    assert all(b["parameters"] > 0 and b["ms_per_image"] > 0 for b in record["backbones"])
    verdict = json.loads((tmp_path / "report" / "verdict.json").read_text())
    assert verdict["use"]["backbone"].startswith("timm/test_") and verdict["use"]["head"] == "softmax"
    assert len(verdict["methods"]) == 2 and all(m["comparable"] for m in verdict["methods"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Which backbone" in report and "timm/test_resnet + softmax" in report
    # screening coded 4 + 4 images per backbone; 4 val images can separate nothing, so none is dropped
    assert record["screen"]["n"] == 4 and not any(d["dropped"] for d in record["screen"]["decisions"].values())
    assert "Screening coded a stratified sample of 4 train and 4 val images" in report


def test_images_one_backbone_did_not_code_are_named_for_every_other(tmp_path):
    from conftest import write_synthetic_codes
    from pipeline.codes.lineup import coded_paths, not_in_all

    a = write_synthetic_codes(tmp_path / "a.h5", n_train=6, n_val=10)
    b = write_synthetic_codes(tmp_path / "b.h5", n_train=6, n_val=8)
    left = not_in_all([a, b], ["train", "val"])
    assert left[b] == [] and len(left[a]) == 2
    assert set(left[a]) == coded_paths(a, ["val"]) - coded_paths(b, ["val"])
