import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

from conftest import ROOT, cli, make_image
from pipeline import UserError
from pipeline.codes.backbone import load_backbone
from pipeline.codes.store import read_attrs, read_codes
from pipeline.images.datasets import eval_images
from pipeline.images.transforms import normalize
from pipeline.stages.features import Config, extract
from pipeline.images.scan import scan

SMALL = dict(backbone="resnet18", weights="none", workers=0, batch_size=4, device="cpu")


def cfg(folder, out, **kw):
    return Config(data=folder, out=str(out), **{**SMALL, **kw})


def test_round_trip_matches_a_direct_forward_pass(folder, tmp_path):
    out = extract(cfg(folder, tmp_path / "f.h5"))
    c = read_codes(out)
    assert c.classes == ["ants", "bees"] and list(c.splits) == ["train", "val"]
    tr = c.splits["train"]
    assert tr.codes.shape == (12, 512) and tr.codes.dtype == np.float32
    assert tr.paths == sorted(tr.paths) and list(tr.labels) == [0] * 6 + [1] * 6
    # the same images through the same trunk, by hand
    s = scan(folder)
    ds = eval_images(folder, s.splits["val"].items)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        want = load_backbone("resnet18", "none").trunk(normalize(x, channels_last=False)).numpy()
    np.testing.assert_allclose(c.splits["val"].codes, want, rtol=1e-4, atol=1e-4)
    a = read_attrs(out)
    assert a["backbone"] == "resnet18" and a["weights"] == "none(seed=0)" and a["precision"] == "fp32"
    assert a["transform"]["crop"] == 224 and a["inputs"]["image_list"] == s.digest()


def test_bad_files_are_skipped_and_recorded(folder, tmp_path):
    good = (folder / "train/ants/img000.jpg").read_bytes()
    (folder / "train/ants/trunc.jpg").write_bytes(good[: len(good) // 3])
    (folder / "train/bees/x.gif").write_bytes(b"GIF89a")
    make_image(folder / "val/bees/gray.png", (90, 90, 90), mode="L")
    c = read_codes(extract(cfg(folder, tmp_path / "f.h5")))
    skipped = dict(c.splits["train"].skipped)
    assert "undecodable" in skipped["train/ants/trunc.jpg"] and "not an image" in skipped["train/bees/x.gif"]
    assert "train/ants/trunc.jpg" not in c.splits["train"].paths and len(c.splits["train"].paths) == 12
    assert "val/bees/gray.png" in c.splits["val"].paths


def test_cache_hit_does_no_model_work(folder, tmp_path, capsys, monkeypatch):
    out = extract(cfg(folder, tmp_path / "f.h5"))
    stamp = os.stat(out).st_mtime_ns
    import pipeline.codes.encoder as E
    monkeypatch.setattr(E.Encoder, "__call__", lambda *a: pytest.fail("model ran on a cache hit"))
    extract(cfg(folder, out))
    assert "cache hit" in capsys.readouterr().out and os.stat(out).st_mtime_ns == stamp


@pytest.mark.parametrize(
    "change,expect",
    [
        ("weights", "weights"),
        ("added", "1 added"),
        ("modified", "1 modified"),
        ("removed", "1 removed"),
        ("crop", "transform"),
    ],
)
def test_changed_inputs_are_refused_then_forced(folder, tmp_path, change, expect):
    out = extract(cfg(folder, tmp_path / "f.h5"))
    kw = {}
    if change == "weights":
        kw["seed"] = 1
    elif change == "added":
        make_image(folder / "train/bees/new.jpg", (0, 0, 255))
    elif change == "modified":
        p = folder / "val/ants/img000.jpg"
        os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    elif change == "removed":
        (folder / "val/ants/img001.jpg").unlink()
    elif change == "crop":
        kw["crop"] = 192
    with pytest.raises(UserError, match=expect):
        extract(cfg(folder, out, **kw))
    before = read_attrs(out)["fingerprint"]
    extract(cfg(folder, out, force=True, **kw))
    assert read_attrs(out)["fingerprint"] != before


def test_incomplete_or_foreign_files_are_rejected(tmp_path):
    p = tmp_path / "half.h5"
    with h5py.File(p, "w") as f:
        f.attrs["format"] = "cnncodes-features/1"
        f.attrs["complete"] = False
    with pytest.raises(UserError, match="incomplete"):
        read_attrs(p)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        read_attrs(tmp_path / "junk.h5")


def test_resume_after_sigkill_gives_identical_file(tmp_path):
    from conftest import make_folder
    data = make_folder(tmp_path / "data", n_train=10, n_val=6)
    args = ["--data", data, "--backbone", "resnet18", "--weights", "none", "--workers", "0",
            "--batch-size", "2", "--shard-size", "2", "--device", "cpu"]
    ref = cli("features", *args, "--out", tmp_path / "ref.h5")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed.h5"
    parts = tmp_path / "killed.h5.parts"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "features", *map(str, args), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("*.npz"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("*.npz")))
    assert 3 <= done < 16 and not out.exists(), "the kill must land mid-extraction"
    with pytest.raises(UserError):
        read_attrs(out)
    again = cli("features", *args, "--out", out)
    assert again.returncode == 0, again.stderr
    assert f"resuming: {done} of 16 shards" in again.stdout
    a, b = read_codes(tmp_path / "ref.h5"), read_codes(out)
    for split in ("train", "val"):
        np.testing.assert_array_equal(a.splits[split].codes, b.splits[split].codes)
        np.testing.assert_array_equal(a.splits[split].labels, b.splits[split].labels)
        assert a.splits[split].paths == b.splits[split].paths
    assert not parts.exists()


def test_cli_errors_are_one_line_exit_2(tmp_path, folder):
    for args, msg in [
        (("features", "--data", folder, "--backbone", "resnet19", "--weights", "none"), "unknown backbone"),
        (("features", "--data", tmp_path / "missing", "--weights", "none"), "does not exist"),
        (("features", "--device", "tpu"), "invalid choice"),
        (("features", "--data", folder, "--weights", "none", "--device", "cpu", "--decode", "gpu",
          "--out", tmp_path / "gpu.h5"), "--decode gpu needs a CUDA GPU"),
        (("nosuchstage",), "unknown stage"),
    ]:
        r = cli(*args)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("features", "--help")
    assert r.returncode == 0 and "(default: resnet18)" in " ".join(r.stdout.split())


def test_hymenoptera_mobilenet_codes_are_real_features(hymenoptera_codes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    c = read_codes(hymenoptera_codes)
    tr, va = c.splits["train"], c.splits["val"]
    assert tr.codes.shape == (244, 1280) and va.codes.shape == (153, 1280)
    assert dict(tr.skipped) == {"train/ants/imageNotFound.gif": "not an image type (.gif)"}
    acc = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        .fit(tr.codes, tr.labels)
        .score(va.codes, va.labels)
    )
    assert acc >= 0.93


def test_crash_during_assembly_resumes_without_model_work_and_keeps_the_cost(folder, tmp_path, monkeypatch, capsys):
    import pipeline.codes.extract as F
    real = F.write_codes

    def crash(*a, **k):
        raise KeyboardInterrupt  # killed after every shard was saved, before the file existed

    monkeypatch.setattr(F, "write_codes", crash)
    with pytest.raises(KeyboardInterrupt):
        extract(cfg(folder, tmp_path / "f.h5"))
    assert not (tmp_path / "f.h5").exists()
    monkeypatch.setattr(F, "write_codes", real)
    import pipeline.codes.encoder as E
    monkeypatch.setattr(E.Encoder, "__call__", lambda *a: pytest.fail("all shards were done: no model work"))
    out = extract(cfg(folder, tmp_path / "f.h5"))
    assert "resuming: 2 of 2 shards" in capsys.readouterr().out
    a = read_attrs(out)
    # the recorded cost is what the codes took in the killed run, not the ~0 s of the resume
    assert a["extract_seconds"] > 0.05 and a["images_per_second"] == pytest.approx(20 / a["extract_seconds"])


def test_enum_weights_bring_their_own_eval_transform(tmp_path):
    from pipeline.codes.weights import Weights
    pre = Config(backbone="mobilenet_v2", weights="DEFAULT").preprocess(Weights.parse("DEFAULT"))
    assert (pre.resize, pre.crop, pre.interpolation) == (232, 224, "bilinear") and "transforms()" in pre.source
    pre = Config(backbone="efficientnet_b3", weights="DEFAULT").preprocess(Weights.parse("DEFAULT"))
    assert (pre.resize, pre.crop, pre.interpolation) == (320, 300, "bicubic")
    pre = Config(backbone="efficientnet_b3", weights="DEFAULT", crop=280).preprocess(Weights.parse("DEFAULT"))
    assert (pre.resize, pre.crop, pre.interpolation) == (320, 280, "bicubic") and pre.source.endswith("and flags")
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    pre = Config(backbone="mobilenet_v2", weights=str(f)).preprocess(Weights.parse(str(f)))
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bilinear")  # a file keeps the tutorial's
    with pytest.raises(UserError, match="crop <= resize"):
        Config(resize=200, crop=224)


def test_compiled_extraction_gives_the_same_codes_cached_apart(folder, tmp_path, capsys):
    from torch._dynamo.utils import counters

    plain = read_codes(extract(cfg(folder, tmp_path / "plain.h5")))
    counters.clear()
    out = extract(cfg(folder, tmp_path / "compiled.h5", compile=True))
    graphs = counters["stats"]["unique_graphs"]
    c = read_codes(out)
    assert "torch.compile:" in capsys.readouterr().out
    for split in ("train", "val"):
        np.testing.assert_allclose(c.splits[split].codes, plain.splits[split].codes, rtol=1e-4, atol=1e-5)
    assert c.header.compile_seconds > 0 and plain.header.compile_seconds == 0
    assert c.header.fingerprint != plain.header.fingerprint and "compile" in c.header.inputs
    # 12 train at batch 4 then 8 val at batch 4: one shape, compiled once (counted, not timed: a timing
    # comparison fails on a loaded machine)
    assert graphs == 1, dict(counters["stats"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_extraction_with_nvjpeg_and_cuda_graphs_matches_the_cpu(folder, tmp_path):
    cpu = read_codes(extract(cfg(folder, tmp_path / "cpu.h5")))
    gpu = read_codes(extract(cfg(folder, tmp_path / "gpu.h5", device="cuda", decode="gpu", compile=True)))
    for split in ("train", "val"):
        a, b = cpu.splits[split].codes, gpu.splits[split].codes
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cpu.splits[split].paths == gpu.splits[split].paths and cos.min() > 0.98, cos
