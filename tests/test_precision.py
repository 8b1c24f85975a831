"""--precision auto|fp32|bf16: what auto picks (the processor check forced both ways), bf16 codes
stored as float32 and cached apart from fp32 ones, bf16 fine-tuning with float32 weights and
optimizer state, the reference loop kept fp32, and predict in bf16."""
from __future__ import annotations

import json
from importlib.metadata import version
import subprocess
from dataclasses import replace
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, make_folder
from pipeline import UserError
from pipeline.codes.store import read_attrs, read_codes
from pipeline.codes import autoprec
from pipeline.core import devices
from pipeline.core.precision import CACHE_ENV, cache_path, decision_key, processor, remember
from pipeline.core.devices import BF16, precision_for
from pipeline.images.scan import scan
from pipeline.stages import features, finetune
from pipeline.stages.predict import Config as PConfig, predict

SMALL = dict(backbone="resnet18", weights="none", workers=0, batch_size=4, device="cpu", resize=40, crop=32)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; spinning threads slow a shared 2-core machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("p") / "data", n_train=8, n_val=4)


@pytest.mark.parametrize("has_bf16", [False, True])
def test_auto_follows_the_processor_check_and_the_remembered_decision(monkeypatch, data, has_bf16):
    monkeypatch.setattr(devices, "cpu_bf16", lambda: has_bf16)
    key = decision_key("resnet18", 4)
    assert precision_for("cpu") == "fp32" and precision_for("cpu", "auto", key) == "fp32"  # nothing decided yet
    remember(key, {"choice": BF16, "why": "test", "fp32_per_s": 1.0, "bf16_per_s": 2.0, "cosine": 1.0})
    want = BF16 if has_bf16 else "fp32"  # without native bf16 it is never measured nor taken
    assert precision_for("cpu", "auto", key) == want and devices.undecided("cpu", "auto", key) is False
    assert precision_for("cuda") == BF16  # a GPU: bf16 whatever the processor
    assert precision_for("cpu", "fp32", key) == "fp32" and precision_for("cpu", "bf16") == BF16
    # the features fingerprint records the resolved precision, not the flag
    job = features.job_for(features.Config(data=data, out="x.h5", **SMALL), scan(data))
    assert job.inputs["precision"] == want
    cache_path().unlink()
    with pytest.raises(UserError, match="--precision"):
        precision_for("cpu", "fp16")


class FakeClock:
    """autoprec's clock, advanced by each step by its cost per image: bf16 made faster or slower."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def timed_steps(monkeypatch, fp32_cost: float, bf16_cost: float, bf16_noise: float = 0.0) -> list:
    """Make autoprec's steps cost what the test says (the real encoder still runs), bf16's outputs
    perturbed by `bf16_noise`; returns the list of calls made."""
    fake, calls, real = FakeClock(), [], autoprec.encoder_steps
    monkeypatch.setattr(autoprec, "clock", fake)

    def steps(enc):
        def timed(p, f, cost):
            def run(x):
                calls.append(p)
                fake.t += cost * len(x)
                out = f(x)
                return out + bf16_noise * np.random.default_rng(0).standard_normal(out.shape) * np.abs(out).max() \
                    if p == BF16 else out
            return run
        s = real(enc)
        return {"fp32": timed("fp32", s["fp32"], fp32_cost), BF16: timed(BF16, s[BF16], bf16_cost)}
    monkeypatch.setattr(autoprec, "encoder_steps", steps)
    return calls


@pytest.mark.parametrize("bf16_cost, noise, want", [(0.5, 0.0, BF16), (0.98, 0.0, "fp32"), (2.0, 0.0, "fp32"),
                                                    (0.5, 1.0, "fp32")],
                         ids=["bf16-faster", "bf16-not-clearly-faster", "bf16-slower", "bf16-disagrees"])
def test_auto_measures_once_remembers_and_the_fingerprint_records_it(monkeypatch, data, tmp_path, capsys,
                                                                       bf16_cost, noise, want):
    monkeypatch.setattr(devices, "cpu_bf16", lambda: True)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "prec.json"))
    calls = timed_steps(monkeypatch, 1.0, bf16_cost, noise)
    out = features.extract(features.Config(data=data, out=str(tmp_path / "a.h5"), **SMALL))
    assert calls.count("fp32") == calls.count(BF16) == autoprec.BATCHES // 2 + 1  # warm-up + 2 blocks of 2
    assert read_attrs(out)["precision"] == want and read_codes(out).header.inputs["precision"] == want
    said = capsys.readouterr().out
    assert f"precision auto: {want}" in said and "measured now" in said
    # the file a user can read: the decision, its rates and agreement, per processor/backbone/batch/torch
    doc = json.loads((tmp_path / "prec.json").read_text())
    (key, entry), = doc.items()
    assert key == decision_key("resnet18", 4) and processor() in key and f"torch {version('torch')}" in key
    assert entry["choice"] == want and entry["fp32_per_s"] == pytest.approx(1.0)
    assert entry["bf16_per_s"] == pytest.approx(1 / bf16_cost, abs=0.01) and (entry["cosine"] < 0.99) == (noise > 0)
    # read back and respected: a second run (another file) measures nothing and resolves the same
    calls.clear()
    again = features.extract(features.Config(data=data, out=str(tmp_path / "b.h5"), **SMALL))
    assert calls == [] and read_attrs(again)["precision"] == want and "remembered" in capsys.readouterr().out
    # the decision deleted: an existing file of the same inputs is still a hit, without measuring
    (tmp_path / "prec.json").unlink()
    features.extract(features.Config(data=data, out=str(out), **SMALL))
    assert calls == [] and "cache hit" in capsys.readouterr().out
    # forced precisions are as before: no measurement
    forced = features.extract(features.Config(data=data, out=str(tmp_path / "c.h5"), precision="fp32", **SMALL))
    assert calls == [] and read_attrs(forced)["precision"] == "fp32"


def test_the_processor_check_imports_no_torch():
    code = ("import sys; from pipeline.core.devices import cpu_bf16; b = cpu_bf16(); "
            "print(type(b).__name__, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    import platform
    on_linux_x86 = platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64")
    assert r.stdout.split()[0] == "bool" and (r.stdout.split()[1] == "False" or not on_linux_x86), r.stderr


def test_bf16_codes_are_float32_close_to_fp32_and_cached_apart(data, tmp_path):
    f32 = features.extract(features.Config(data=data, out=str(tmp_path / "a.h5"), precision="fp32", **SMALL))
    b16 = features.extract(features.Config(data=data, out=str(tmp_path / "b.h5"), precision="bf16", **SMALL))
    a, b = read_codes(f32), read_codes(b16)
    assert read_attrs(b16)["precision"] == BF16 and read_attrs(f32)["precision"] == "fp32"
    assert a.header.inputs["precision"] == "fp32" and b.header.inputs["precision"] == BF16
    for name in a.splits:
        x, y = a.splits[name].codes, b.splits[name].codes
        assert y.dtype == np.float32 and x.shape == y.shape and not np.array_equal(x, y)
        cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        assert cos.min() > 0.99
    # an fp32 file asked for in bf16 is made from other inputs: refused, and the change named
    with pytest.raises(UserError, match="precision 'fp32' -> 'bf16-autocast'"):
        features.extract(features.Config(data=data, out=str(f32), precision="bf16", **SMALL))


def ft_cfg(data, out, **kw):
    base = dict(data=data, out=out, backbone="resnet18", weights="none", epochs=1, batch_size=4, lr=0.003,
                resize=40, crop=32, workers=0, device="cpu", seed=0)
    return finetune.Config(**{**base, **kw})


def test_bf16_fine_tuning_keeps_float32_weights(data, tmp_path, capsys, monkeypatch):
    run_dir, doc = finetune.train(ft_cfg(data, tmp_path / "runs", precision="bf16"))
    assert doc["hyperparameters"]["precision"] == BF16 and f"({BF16})" in capsys.readouterr().out
    state = torch.load(run_dir / "final.pt", weights_only=True)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # fp32 master weights
    assert np.isfinite(doc["val"]["accuracy"])
    # predict in bf16 labels as in fp32, with scores close to them
    rows = {p: predict(PConfig(model=run_dir, images=(str(data / "val"),), device="cpu", workers=0, precision=p))[0]
            for p in ("fp32", "bf16")}
    assert [r[:2] for r in rows["fp32"]] == [r[:2] for r in rows["bf16"]]
    assert max(abs(a[2] - b[2]) for a, b in zip(rows["fp32"], rows["bf16"])) < 0.05
    assert f"({BF16}, --precision bf16)" in capsys.readouterr().err
    # predict's default is the exported model's fp32, even where auto would pick bf16: the same scores as export's
    monkeypatch.setattr(devices, "cpu_bf16", lambda: True)
    assert predict(PConfig(model=run_dir, images=(str(data / "val"),), device="cpu", workers=0))[0] == rows["fp32"]
    assert "(fp32, --precision fp32)" in capsys.readouterr().err


@pytest.mark.parametrize("bf16_cost, want", [(0.5, BF16), (2.0, "fp32")], ids=["bf16-faster", "bf16-slower"])
def test_fine_tuning_measures_its_step_once_per_mode(data, tmp_path, monkeypatch, capsys, bf16_cost, want):
    from pipeline.finetune import step_timing

    monkeypatch.setattr(devices, "cpu_bf16", lambda: True)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "prec.json"))
    fake, real, calls = FakeClock(), step_timing.train_step, []
    monkeypatch.setattr(autoprec, "clock", fake)

    def step(learner, x, y):
        calls.append(learner.bf16)
        fake.t += (bf16_cost if learner.bf16 else 1.0) * len(x)
        return real(learner, x, y)
    monkeypatch.setattr(step_timing, "train_step", step)
    _, doc = finetune.train(ft_cfg(data, tmp_path / "runs", mode="frozen"))
    assert doc["hyperparameters"]["precision"] == want and "measured now" in capsys.readouterr().out
    (key, entry), = json.loads((tmp_path / "prec.json").read_text()).items()
    assert key == decision_key("resnet18", 4, "finetune frozen step") and entry["choice"] == want
    n = len(calls)
    _, doc = finetune.train(ft_cfg(data, tmp_path / "runs2", mode="frozen", seed=1))
    assert doc["hyperparameters"]["precision"] == want and len(calls) == n  # no timing again
    assert "remembered" in capsys.readouterr().out


def test_predict_measures_when_undecided_and_reads_the_decision_after(data, tmp_path, monkeypatch, capsys):
    run_dir, _ = finetune.train(ft_cfg(data, tmp_path / "runs", precision="fp32"))
    monkeypatch.setattr(devices, "cpu_bf16", lambda: True)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "prec.json"))
    seen, real = [], autoprec.measure

    def measure(steps, batches, unit="images"):
        seen.append(sorted(steps))
        got = real(steps, batches, unit)  # both precisions really run on the images' batches
        return {**got, "choice": BF16, "why": "as the test says"}
    monkeypatch.setattr(autoprec, "measure", measure)
    cfg = PConfig(model=run_dir, images=(str(data / "val"),), device="cpu", workers=0, batch_size=2,
                  precision="auto")  # predict defaults to fp32, the exported model's: auto measures
    rows = predict(cfg)[0]
    assert seen == [sorted(["fp32", BF16])] and len(rows) == 8
    err = capsys.readouterr().err
    assert "precision auto: bf16-autocast (as the test says" in err and f"({BF16}, --precision auto)" in err
    predict(cfg)
    assert len(seen) == 1 and "remembered" in capsys.readouterr().err
    # fewer images than one batch: too few to time, fp32 and nothing remembered
    (tmp_path / "prec.json").unlink()
    predict(replace(cfg, batch_size=16))  # 8 images
    assert len(seen) == 1 and "too few to time" in capsys.readouterr().err and not (tmp_path / "prec.json").exists()


def test_the_reference_loop_stays_fp32(data, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--precision bf16 applies to --loop fast"):
        ft_cfg(data, tmp_path, loop="reference", precision="bf16")
    monkeypatch.setattr(devices, "cpu_bf16", lambda: True)  # auto would pick bf16 for the fast loop here
    cfg = ft_cfg(data, tmp_path / "runs", loop="reference")
    assert cfg.recipe.precision == "auto"
    _, doc = finetune.train(cfg)
    assert doc["hyperparameters"]["precision"] == "fp32"
