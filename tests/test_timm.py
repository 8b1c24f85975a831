"""timm backbones by name (codes.timm_models): the pooled pre-logits as the code, the eval transform
of the name's pretrained_cfg whatever the weights, local files, and the later stages on them.
Random-weight timm test models (test_efficientnet, 160 px) build without the network."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import cli
from pipeline import UserError
from pipeline.codes import timm_models
from pipeline.codes.backbone import load_backbone
from pipeline.codes.store import read_attrs
from pipeline.codes.weights import Weights

timm = pytest.importorskip("timm")
NAME = "timm/test_efficientnet"


def test_code_is_the_pooled_pre_logits_vector_of_the_timm_model():
    bb = load_backbone(NAME, "none", seed=3)
    torch.manual_seed(3)
    full = timm.create_model("test_efficientnet", pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = full.forward_head(full.forward_features(x), pre_logits=True)
        assert torch.allclose(bb.trunk(x), want, atol=1e-5)
    assert bb.dim == want.shape[1] and bb.weights_id == "none(seed=3)"


def test_eval_transform_comes_from_the_pretrained_cfg_for_every_kind_of_weights(tmp_path):
    for w in ("none", str(tmp_path / "w.pth"), "DEFAULT"):
        pre = Weights.parse(w).preprocess("timm/tf_efficientnet_lite0")
        assert (pre.crop, pre.resize, pre.interpolation) == (224, 256, "bicubic")  # 224 / 0.875
        assert pre.mean == pre.std == (0.5, 0.5, 0.5) and "pretrained_cfg" in pre.source
    small = Weights.parse("none").preprocess(NAME)
    assert small.crop == 160 and small.mean[0] == pytest.approx(0.485)  # its own cfg: 160 px, ImageNet stats


def test_a_local_file_may_lack_the_classifier_only(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    torch.save(sd, tmp_path / "trunk.pth")
    bb = load_backbone(NAME, str(tmp_path / "trunk.pth"))
    assert bb.weights_id == "file:trunk.pth"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(bb.trunk(x), model.eval().forward_head(model.forward_features(x), pre_logits=True),
                              atol=1e-5)
    del sd[next(iter(sd))]
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(UserError, match="missing keys"):
        load_backbone(NAME, str(tmp_path / "short.pth"))
    with pytest.raises(UserError, match="do not fit"):  # another architecture: shapes differ
        load_backbone("timm/test_resnet", str(tmp_path / "trunk.pth"))


def test_unknown_names_and_offline_default_weights_are_one_line_errors(monkeypatch):
    with pytest.raises(UserError, match="did you mean timm/tf_efficientnet_lite0"):
        load_backbone("timm/tf_efficentnet_lite0", "none")
    monkeypatch.setattr(timm_models, "_online", lambda timeout=3.0: False)
    monkeypatch.setattr(timm_models, "_cached_file", lambda model: None)
    with pytest.raises(UserError, match="offline, pass --weights PATH"):
        load_backbone(NAME, "DEFAULT")


def test_list_backbones_names_torchvision_and_timm_models():
    r = cli("features", "--list-backbones", "efficientnet_lite")
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert "timm/tf_efficientnet_lite0" in names and all("efficientnet_lite" in n for n in names)
    assert "resnet18" in cli("features", "--list-backbones", "resnet1").stdout.split()


def test_features_classify_predict_on_a_timm_backbone(folder, tmp_path):
    from pipeline.stages.classify import Config as CConfig, classify
    from pipeline.stages.features import Config as FConfig, extract
    from pipeline.stages.predict import Config as PConfig, predict

    out = extract(FConfig(data=folder, backbone=NAME, weights="none", out=str(tmp_path / "t.h5"), device="cpu",
                          workers=0, batch_size=8))
    attrs = read_attrs(out)
    assert attrs["transform"]["crop"] == 160 and attrs["transform"]["interpolation"] == "bicubic"
    assert "timm" in attrs["inputs"]["versions"] and attrs["backbone"] == NAME
    run = classify(CConfig(features=out, head="softmax", out=tmp_path / "runs", label_curve="off", folds=2))[0]
    spec = json.loads((run / "model.json").read_text())
    assert spec["backbone"] == NAME and spec["crop"] == 160 and spec["interpolation"] == "bicubic"
    rows, bad, kind = predict(PConfig(model=run, images=(str(folder / "val"),), device="cpu", workers=0))
    rows = list(rows)
    assert len(rows) == 8 and not bad and kind == "probability"
    got = {Path(p).relative_to(folder).as_posix(): c for p, c, _ in rows}
    want = {r["path"]: spec["classes"][r["pred"]] if isinstance(r["pred"], int) else r["pred"]
            for r in json.loads((run / "metrics.json").read_text())["predictions"]}
    assert got == want  # predict decodes and transforms as features did


def test_finetune_and_export_of_timm_runs_agree_with_predict(folder, tmp_path):
    """A 1-epoch fine-tune and a head on timm codes, each exported to ONNX with its own transform in
    the metadata: onnxruntime's labels and scores match predict's (export's own check)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import contextlib
    import io
    import re

    import onnx

    from pipeline.stages.classify import Config as CConfig, classify
    from pipeline.stages.export import Config as EConfig, run as export
    from pipeline.stages.features import Config as FConfig, extract
    from pipeline.stages.finetune import Config as TConfig, train

    feats = extract(FConfig(data=folder, backbone=NAME, weights="none", out=str(tmp_path / "t.h5"), device="cpu",
                            workers=0, resize=72, crop=64))
    [head] = classify(CConfig(features=feats, head="softmax", out=tmp_path / "runs", label_curve="off", folds=2))
    tuned, _ = train(TConfig(data=folder, out=tmp_path / "runs", backbone=NAME, weights="none", epochs=1,
                             batch_size=8, resize=72, crop=64, workers=0, device="cpu"))
    for run in (head, tuned):
        buf, out = io.StringIO(), tmp_path / f"shipped-{run.name}"
        with contextlib.redirect_stdout(buf):
            assert export(EConfig(model=run, out=out, images=str(folder / "val"))) in (0, None)
        text = buf.getvalue()
        assert re.search(r"\b(\d+)/\1 labels agree", text), text
        assert float(re.search(r"difference\| (\S+)", text).group(1)) < 1e-3
        meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx"), load_external_data=False).metadata_props}
        assert NAME in json.dumps(meta) and meta["crop"] == "64" and meta["interpolation"] == "bicubic"


OWN_STATS = "timm/test_resnet"  # its pretrained_cfg: mean = std = 0.5, bilinear, 160 px


def seen_batches(monkeypatch) -> list:
    """Every batch the fine-tuned model is given (a forward pre-hook on each classifier built)."""
    from pipeline.codes import backbone

    seen, real = [], backbone.classifier

    def hooked(bb, n):
        model = real(bb, n)
        model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().float().clone()))
        return model
    monkeypatch.setattr(backbone, "classifier", hooked)
    return seen


def assert_normalised_with(batches: list, mean, std) -> None:
    """Each batch is uint8 pixels normalised with exactly this mean/std: x * std + mean, times 255,
    gives back whole numbers in 0..255 (ImageNet's statistics would not)."""
    assert batches
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    for x in batches:
        px = (x * s + m) * 255
        assert px.min() > -1e-3 and px.max() < 255 + 1e-3
        assert (px - px.round()).abs().max() < 1e-3


@pytest.mark.parametrize("loop", ["fast", "reference"])
def test_finetune_of_a_timm_model_normalises_with_and_records_its_pretrained_cfg(folder, tmp_path, monkeypatch,
                                                                                 loop):
    """Both loops (train, val, and for the fast loop the steps --precision auto times and the test
    split) feed the model batches normalised with the name's pretrained_cfg mean/std, and the run records them
    where predict and export read."""
    from timm.models import get_pretrained_cfg

    from pipeline.core import devices
    from pipeline.core.precision import CACHE_ENV
    from pipeline.stages.finetune import Config as TConfig, train

    cfg = get_pretrained_cfg("test_resnet")
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5)  # not ImageNet's: the point of the test
    seen = seen_batches(monkeypatch)
    if loop == "fast":  # undecided and bf16-capable: the fast loop times its steps first (step_timing)
        monkeypatch.setattr(devices, "cpu_bf16", lambda: True)
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "prec.json"))
        shutil.copytree(folder / "val", folder / "test")  # and the finished model scores a test split
    run, doc = train(TConfig(data=folder, out=tmp_path / "runs", backbone=OWN_STATS, weights="none", epochs=1,
                             batch_size=8, resize=72, crop=64, workers=0, device="cpu", loop=loop,
                             precision="auto" if loop == "fast" else "fp32"))
    assert (tmp_path / "prec.json").is_file() == ("test" in doc) == (loop == "fast")
    assert_normalised_with(seen, cfg.mean, cfg.std)
    assert sum(len(x) for x in seen) >= 12 + 8  # 12 train images trained, 8 val images scored (and cost timed)
    spec = json.loads((run / "model.json").read_text())
    own = {"mean": list(cfg.mean), "std": list(cfg.std)}
    assert {k: spec[k] for k in own} == own and spec["interpolation"] == cfg.interpolation
    assert {k: doc["inputs"]["transform"][k] for k in own} == own  # in the fingerprint too
    assert {k: list(doc["hyperparameters"][k]) for k in own} == own


def test_predict_and_export_of_a_timm_finetune_agree_with_its_val_probabilities(folder, tmp_path):
    """predict reads the run's own normalisation back: its top probability of every val image is
    the run's own within 1e-4, and the exported ONNX file carries the same mean/std."""
    from pipeline.stages.finetune import Config as TConfig, train
    from pipeline.stages.predict import Config as PConfig, predict

    run, doc = train(TConfig(data=folder, out=tmp_path / "runs", backbone=OWN_STATS, weights="none", epochs=1,
                             batch_size=8, resize=72, crop=64, workers=0, device="cpu", precision="fp32"))
    rows, bad, _ = predict(PConfig(model=run, images=(str(folder / "val"),), device="cpu", workers=0,
                                   precision="fp32"))
    got = {Path(p).relative_to(folder).as_posix(): (c, v) for p, c, v in rows}
    assert not bad and len(got) == 8
    for p in doc["predictions"]:
        cls, score = got[p["path"]]
        assert cls == doc["classes"][p["pred"]] and score == pytest.approx(p["score"], abs=1e-4)
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        import onnx

        from pipeline.stages.export import Config as EConfig, run as export

        export(EConfig(model=run, out=tmp_path / "shipped", images=str(folder / "val")))
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / "shipped" / "model.onnx"),
                                                  load_external_data=False).metadata_props}
        assert json.loads(meta["mean"]) == json.loads(meta["std"]) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "tf_efficientnet_lite0"])
def test_batchnorm_of_timm_models_folds_and_the_codes_stay_the_same(name):
    """BatchNormAct2d (EfficientNet family), plain BatchNorm2d (ResNet) and tf_ "same" padding
    (Conv2dSame, lite0) all fold: no BatchNorm is left and the codes match the plain trunk's within
    1e-4, activations after each BatchNormAct2d kept (lite0's ReLU6 would show if dropped)."""
    from pipeline.codes.backbone import classifier, fold_batchnorm

    bb = load_backbone(f"timm/{name}", "none", seed=0)
    g = torch.Generator().manual_seed(0)
    for m in bb.trunk.modules():  # statistics unlike the init's, so folding changes every weight
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 + 0.8)
    x = torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        plain = bb.trunk.eval()(x)
        folded, ok = fold_batchnorm(bb.trunk)
        assert ok and not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
        assert "batch_norm" not in folded.code  # folded, not merely traced into F.batch_norm calls
        assert torch.allclose(folded(x), plain, atol=1e-4, rtol=1e-4)
        model = classifier(bb, 2).eval()  # what export folds: a classifier around the timm trunk
        assert torch.allclose(fold_batchnorm(model)[0](x), model(x), atol=1e-4, rtol=1e-4)
