"""Past one process: torchrun-sharded extraction (gloo on CPU) gives the single-process file, a
killed run resumes with any number of ranks, and a CSV manifest gives the ImageFolder's codes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT, make_folder
from pipeline.codes.store import read_codes

FLAGS = ["--backbone", "resnet18", "--weights", "none", "--device", "cpu", "--workers", "0", "--resize", "40",
         "--crop", "32", "--interpolation", "bilinear", "--batch-size", "4", "--shard-size", "8"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: the same arithmetic in every run


def torchrun(n: int, data: Path, out: Path, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "pipeline",
           "features", "--data", str(data), "--out", str(out), *FLAGS]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


def same_file(a: Path, b: Path):
    ca, cb = read_codes(a), read_codes(b)
    assert ca.header.fingerprint == cb.header.fingerprint
    for name in ca.splits:
        x, y = ca.splits[name], cb.splits[name]
        assert x.paths == y.paths and (x.labels == y.labels).all() and x.skipped == y.skipped
        np.testing.assert_array_equal(x.codes, y.codes)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = make_folder(tmp_path_factory.mktemp("d") / "data", n_train=20, n_val=8, size=(48, 40))
    (root / "train" / "ants" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


@pytest.fixture(scope="module")
def single(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "f.h5"
    r = subprocess.run([sys.executable, "-m", "pipeline", "features", "--data", str(images), "--out", str(out),
                        *FLAGS], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def test_two_ranks_give_the_single_process_file(images, single, tmp_path):
    p = torchrun(2, images, tmp_path / "f.h5")
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out
    same_file(single, tmp_path / "f.h5")
    assert out.count("wrote ") == 1  # rank 0 alone assembles the file
    assert not (tmp_path / "f.h5.parts").exists()


def test_a_killed_rank_leaves_its_shards_and_a_rerun_with_other_ranks_completes(images, single, tmp_path):
    out = tmp_path / "f.h5"
    p = torchrun(2, images, out)
    parts = tmp_path / "f.h5.parts"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("*.npz"))) < 2 and p.poll() is None:
        time.sleep(0.05)
    ranks = [int(c) for c in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
    os.kill(ranks[-1], signal.SIGKILL)  # one rank dies; torchrun stops the others
    p.communicate(timeout=300)
    if out.exists():  # the run was faster than the kill: nothing left to resume
        pytest.skip("the extraction finished before a rank could be killed")
    left = sorted(f.name for f in parts.glob("*.npz"))
    assert left  # finished shards survive the crash
    r = subprocess.run([sys.executable, "-m", "pipeline", "features", "--data", str(images), "--out", str(out),
                        *FLAGS], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {len(left)} of" in r.stdout
    same_file(single, out)


def test_a_manifest_gives_the_image_folder_codes(images, single, tmp_path):
    lines = ["path,label,split"]
    for split in ("train", "val"):
        for f in sorted((images / split).rglob("*.jpg")):
            rel = f.relative_to(images).as_posix()
            # relative to the manifest's folder, or absolute: both are accepted
            path = f"data/{rel}" if split == "train" else str(f)
            lines.append(f"{path},{f.parent.name},{split}")
    shutil.copytree(images, tmp_path / "data")
    (tmp_path / "photos.csv").write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "pipeline", "features", "--data", str(tmp_path / "photos.csv"),
                        "--out", str(tmp_path / "m.h5"), *FLAGS], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    a, b = read_codes(single), read_codes(tmp_path / "m.h5")
    assert b.header.dataset == "photos" and a.classes == b.classes
    for name in ("train", "val"):
        np.testing.assert_array_equal(a.splits[name].codes, b.splits[name].codes)
        assert (a.splits[name].labels == b.splits[name].labels).all()
        assert [p.split("/")[-1] for p in a.splits[name].paths] == [p.split("/")[-1] for p in b.splits[name].paths]
    assert [s.split("/")[-1] for s, _ in b.splits["train"].skipped] == ["broken.jpg"]
    with h5py.File(tmp_path / "m.h5") as f:
        assert f.attrs["dataset"] == "photos"


def test_manifest_errors_are_one_line(tmp_path):
    from pipeline import UserError
    from pipeline.images.scan import scan

    (tmp_path / "bad.csv").write_text("file,class\nx.jpg,a\n")
    with pytest.raises(UserError, match="lacks the columns path, label, split"):
        scan(tmp_path / "bad.csv")
    (tmp_path / "m.csv").write_text("path,label,split\nmissing.jpg,a,train\nalso.jpg,b,val\n")
    with pytest.raises(UserError, match="no usable image for split 'train'"):
        scan(tmp_path / "m.csv")


def test_predict_on_two_ranks_writes_rows_in_input_order(images, single, tmp_path):
    from pipeline.stages.classify import Config, classify

    [run] = classify(Config(features=single, head="softmax", out=tmp_path / "runs", folds=2, label_curve="off"))
    args = ["--model", str(run), str(images / "val"), str(images / "train"), "--device", "cpu", "--workers", "0",
            "--batch-size", "3"]
    one = subprocess.run([sys.executable, "-m", "pipeline", "predict", *args, "--csv", str(tmp_path / "one.csv")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 1 and "broken.jpg: not labelled" in one.stderr  # one unreadable file: exit 1
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "pipeline", "predict", *args, "--csv", str(tmp_path / "two.csv")],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text(), two.stdout + two.stderr
    rows = (tmp_path / "one.csv").read_text().splitlines()
    assert rows[0] == "path,class,probability" and len(rows) == 1 + 16 + 40  # val first, as given; broken left out
    assert [r.split(",")[0] for r in rows[1:17]] == sorted(r.split(",")[0] for r in rows[1:17])
    assert not list(tmp_path.glob("two.csv.rank*"))


def test_predict_on_two_ranks_measures_precision_auto_once(images, single, tmp_path):
    """Rank 0 times fp32 against bf16; rank 1 waits and reads its decision (two ranks timing at once
    would slow each other and could decide apart). A processor without bf16 measures nothing."""
    from pipeline.stages.classify import Config, classify

    [run] = classify(Config(features=single, head="softmax", out=tmp_path / "runs", folds=2, label_curve="off"))
    cache = tmp_path / "precision.json"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "pipeline", "predict", "--model", str(run), str(images / "train"), "--device", "cpu",
                          "--workers", "0", "--batch-size", "3", "--precision", "auto",
                          "--csv", str(tmp_path / "p.csv")],
                         cwd=ROOT, env={**ENV, "CNNCODES_PRECISION_CACHE": str(cache)}, capture_output=True, text=True,
                         timeout=600)
    said = two.stdout + two.stderr
    assert two.returncode in (0, 1) and (tmp_path / "p.csv").is_file(), said  # exit 1: the broken file
    assert said.count("measured now") == (1 if cache.is_file() else 0), said
