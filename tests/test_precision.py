"""--precision auto|fp32|bf16: what auto picks (the processor check forced both ways), bf16 codes
stored as float32 and cached apart from fp32 ones, bf16 fine-tuning with float32 weights and
optimizer state, the reference loop kept fp32, and predict in bf16."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, make_folder
from pipeline import UserError
from pipeline.codes.store import read_attrs, read_codes
from pipeline.core import devices
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


@pytest.mark.parametrize("has_bf16, want", [(False, "fp32"), (True, BF16)])
def test_auto_follows_the_processor_check(monkeypatch, data, has_bf16, want):
    monkeypatch.setattr(devices, "cpu_bf16", lambda: has_bf16)
    assert precision_for("cpu") == want and precision_for("cpu", "auto") == want
    assert precision_for("cuda") == BF16  # a GPU: bf16 whatever the processor
    assert precision_for("cpu", "fp32") == "fp32" and precision_for("cpu", "bf16") == BF16
    # the features fingerprint records the resolved precision, not the flag
    job = features.job_for(features.Config(data=data, out="x.h5", **SMALL), scan(data))
    assert job.inputs["precision"] == want
    with pytest.raises(UserError, match="--precision"):
        precision_for("cpu", "fp16")


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


def test_the_reference_loop_stays_fp32(data, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--precision bf16 applies to --loop fast"):
        ft_cfg(data, tmp_path, loop="reference", precision="bf16")
    monkeypatch.setattr(devices, "cpu_bf16", lambda: True)  # auto would pick bf16 for the fast loop here
    cfg = ft_cfg(data, tmp_path / "runs", loop="reference")
    assert cfg.recipe.precision == "auto"
    _, doc = finetune.train(cfg)
    assert doc["hyperparameters"]["precision"] == "fp32"
