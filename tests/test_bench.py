"""The bench package (`python -m bench`): its sections on a tiny synthetic ImageFolder (resnet18,
random weights, 1 epoch, CPU), the JSON shape, the ratio/target logic, and one-line errors for bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import timing
from bench.__main__ import main, run_all
from bench.common import Setup, Target, judge, per_epoch, ratio_of, row, same_accuracy
from bench.document import table
from bench.extraction import bench_gpu_extraction
from bench.synthetic import make_image_folder
from conftest import make_folder
from pipeline.core.files import write_json

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"name", "ours", "reference", "unit", "ratio", "target", "met", "note"}


def test_ratio_is_greater_than_one_when_we_are_better():
    assert ratio_of(2.0, 30.0, "lower") == pytest.approx(15.0)  # seconds: 2 s vs 30 s
    assert ratio_of(300.0, 100.0, "higher") == pytest.approx(3.0)  # images/s
    assert ratio_of(1.0, None, "lower") is None
    assert ratio_of(1.0, 2.0, None) is None  # heads: no reference
    assert ratio_of(1.0, 0.0, "higher") is None


def test_judge_and_row_met_logic():
    assert judge(15.0, 15.0) is True
    assert judge(14.9, 15.0) is False
    assert judge(None, 15.0) is None and judge(3.0, None) is None
    assert judge(20.0, 15.0, True, None) is True  # None = accuracy not measured: time alone decides
    assert judge(20.0, 15.0, False) is False  # faster, but accuracy not equal
    r = row("t", 2.0, 40.0, "s", "lower", Target(15.0, conditions=(True,)))
    assert r["ratio"] == pytest.approx(20.0) and r["met"] is True
    r = row("gpu", 16_000.0, 100.0, "images/s", "higher", Target(15_000, of="ours"))
    assert r["ratio"] == pytest.approx(160.0) and r["met"] is True
    r = row("mem", 439.0, 400.0, "MB", "lower", 1 / 1.1)  # +9.75%: within 10%
    assert r["met"] is True and row("mem", 441.0, 400.0, "MB", "lower", 1 / 1.1)["met"] is False
    assert same_accuracy(147, 148) and same_accuracy(150, 148) and not same_accuracy(146, 148)
    assert per_epoch([9.0, 2.0, 4.0]) == 3.0 and per_epoch([9.0, 3.0]) == 6.0


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    data = make_folder(tmp / "data", n_train=6, n_val=4)
    s = Setup(data=data, backbone="resnet18", weights="none", tmp=tmp, quick=True, device="cpu", epochs=1,
                    resize=40, crop=32, memory_counts=(12, 36),
                    head_cases=((60, 20, 16, 3, 0.5), (90, 30, 8, 3, 0.5)), head_image_size=(48, 40),
                    stream_counts=(2_000, 20_000), rank_images=12)
    return run_all(s)


def test_document_shape(doc, tmp_path):
    assert {"machine", "commit", "versions", "quick", "results"} <= doc.keys()
    assert {"cpu", "cores", "gpu"} <= doc["machine"].keys()
    assert {"torch", "torchvision", "numpy", "sklearn"} <= doc["versions"].keys()
    assert isinstance(doc["commit"], str) and doc["commit"]
    for r in doc["results"]:
        assert set(r) == KEYS, r["name"]
        assert r["met"] in (True, False, None)
        assert isinstance(r["note"], str)
    names = [r["name"] for r in doc["results"]]
    assert any(n.startswith("extraction: data") for n in names)
    assert sum(n.startswith("head fit with CV") for n in names) == 4
    pace = [r for r in doc["results"] if "classify --head all vs features" in r["name"]]
    assert len(pace) == 2 and all(r["unit"] == "s" and r["target"] == 1.0 for r in pace)
    assert "measured on 80 synthetic" in pace[0]["note"] and "projected from" in pace[1]["note"]
    assert sum(n.startswith("heads 60x16") and "fit with CV" in n for n in names) == 4
    [stream] = [r for r in doc["results"] if r["name"].startswith("sgd head peak RSS: 20,000 vs 2,000")]
    assert stream["ours"] > 50 and stream["reference"] > 50 and stream["unit"] == "MB"
    [ranks] = [r for r in doc["results"] if r["name"].startswith("features wall time: torchrun 2 ranks")]
    assert ranks["ours"] > 0 and ranks["reference"] > 0
    out = write_json(tmp_path / "b.json", doc)
    from pipeline.report.render import bench_blocks
    from pipeline.stages.report import read_bench
    assert bench_blocks(read_bench(out))[2][0] == "table"  # the report renders it
    assert "benchmark" in table(doc)


def test_ratios_consistent_with_ours_and_reference(doc):
    lower = {"s", "s/epoch", "MB", "ms/image"}
    for r in doc["results"]:
        if r["ours"] is None or r["reference"] is None:
            assert r["ratio"] is None
            continue
        num, den = (r["reference"], r["ours"]) if r["unit"] in lower else (r["ours"], r["reference"])
        if den == 0:  # e.g. a random-weights reference at 0% accuracy: no ratio
            assert r["ratio"] is None
            continue
        assert r["ratio"] == pytest.approx(num / den), r["name"]
        if r["target"] is not None and "target is on ours" not in r["note"]:
            assert r["met"] is (r["ratio"] >= r["target"])  # quick mode: no accuracy condition


def test_export_section_records_size_and_ms_per_image_against_predict(doc):
    rows = [r for r in doc["results"] if r["name"].startswith("export: ")]
    if "not measured" in rows[0]["note"]:
        pytest.skip(rows[0]["note"])  # onnx, onnxscript or onnxruntime not installed
    size, *ms = rows
    assert size["unit"] == "MB" and size["ours"] > 1 and size["reference"] > 1 and "bytes" in size["note"]
    assert [r["unit"] for r in ms] == ["ms/image"] * 2 and all(r["ours"] > 0 and r["reference"] > 0 for r in ms)
    assert "batch 1" in ms[0]["name"] and "batch 32" in ms[1]["name"] and "unknown decisions agree" in ms[0]["note"]


def test_gpu_section_skipped_on_cpu(doc):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    (r,) = [r for r in doc["results"] if "synthetic ImageNet-size" in r["name"]]
    assert r["met"] is None and r["ours"] is None and r["target"] == 15_000
    assert "not measured: no CUDA GPU" in r["note"]


def test_quick_rows_say_what_was_projected(doc):
    by = {r["name"]: r for r in doc["results"]}
    frozen = by["frozen backbone end to end: wall time (reference 25 epochs)"]
    assert "projected" in frozen["note"] and frozen["target"] == 30.0
    acc = by["frozen backbone end to end: val accuracy"]
    assert acc["reference"] is None and acc["met"] is None and acc["ours"] is not None
    ft = by["fine-tuning (full): train time per epoch"]
    assert ft["target"] == 1.5 and ft["ours"] > 0 and ft["reference"] > 0
    mem = [r for r in doc["results"] if r["name"].startswith("features peak RSS")][0]
    assert mem["ours"] > 50 and mem["reference"] > 50  # MB: a process that imported torch


def test_synthetic_jpegs_look_like_imagenet(tmp_path):
    root = make_image_folder(tmp_path / "s", 6, (500, 375), splits=(("train", 1.0),), unique=3)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 6 and {p.parent.name for p in files} == {"a", "b"}
    kb = sum(p.stat().st_size for p in files) / len(files) / 1e3
    assert 80 < kb < 140
    from PIL import Image
    assert Image.open(files[0]).size == (500, 375)


def test_gpu_section_runs_when_forced(tmp_path):
    """The GPU-only section's code path, on CPU with a handful of small-resized images."""
    s = Setup(data=tmp_path, backbone="resnet18", weights="none", tmp=tmp_path, device="cpu", resize=40, crop=32,
                    gpu_images=6, gpu_reference_images=4, force_gpu_section=True)
    r, compiled, decode = bench_gpu_extraction(s)
    assert r["ours"] > 0 and r["reference"] > 0 and r["met"] is False and "4 of the files" in r["note"]
    assert decode["ours"] > 0 and decode["reference"] > 0 and "torchvision" in r["name"]
    assert compiled["ours"] > 0 and "--compile" in compiled["name"] and "s of compiling" in compiled["note"]


def test_reference_runs_with_its_fastest_worker_count(doc, monkeypatch):
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 16)
    assert timing.worker_counts() == [0, 1, 4]
    monkeypatch.setattr(timing.os, "cpu_count", lambda: 2)
    assert timing.worker_counts() == [0, 1]
    monkeypatch.undo()
    tried = str(timing.worker_counts())
    by = {r["name"]: r for r in doc["results"]}
    for name in ("frozen backbone end to end: wall time (reference 25 epochs)",
                 "fine-tuning (full): train time per epoch"):
        assert f"the fastest of {tried} (one epoch's train time" in by[name]["note"], by[name]["note"]
    [ext] = [r for r in doc["results"] if r["name"].startswith("extraction: data")]
    assert f"the fastest of {tried} on this machine" in ext["note"] and "ours: batch 32" in ext["note"]


@pytest.mark.parametrize("args, says", [
    (["--data", "/nonexistent/dir"], "does not exist"),
    (["--backbone", "resnet999"], "unknown backbone"),
    (["--weights", "/nonexistent/w.pth"], "does not exist"),
    (["--sections", "extraction,nope"], "unknown section"),
])
def test_bad_input_is_one_line_and_exit_2(args, says, tmp_path, capsys):
    data = make_folder(tmp_path / "data", n_train=2, n_val=2)
    argv = ["--data", str(data), "--weights", "none", "--out", str(tmp_path / "b.json"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert not (tmp_path / "b.json").exists()


def test_script_exit_code_for_missing_data(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "--data", str(tmp_path / "absent"),
                        "--out", str(tmp_path / "b.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("bench: error:") and len(p.stderr.strip().splitlines()) == 1
