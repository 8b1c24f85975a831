"""finetune stage: tiny red-vs-blue ImageFolders, random weights, a small backbone, CPU only."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import UserError
from pipeline.codes.backbone import classifier, load_backbone
from pipeline.images.decode import load_rgb
from pipeline.images.augment import augment, crop_params
from pipeline.images.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, normalize
from pipeline.finetune.train import build
from pipeline.stages.finetune import Config, train

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors gain nothing from threads, and OpenMP threads spinning on a shared 2-core
    # machine can make these tests 10x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """2 classes (reddish vs bluish noise), 64 train + 6 val per class, JPEG and PNG, odd sizes.

    64 train images at batch 8 give BatchNorm enough updates in 2 epochs that a randomly
    initialised net scores as well in eval mode as in train mode.
    """
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("val", 6)):
        for c, cls in enumerate(("blue", "red")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                h, w = (48, 64) if i % 2 else (64, 40)
                px = rng.integers(0, 90, (h, w, 3))
                px[..., 2 if c == 0 else 0] += 160
                ext = "png" if i % 3 == 0 else "jpg"
                Image.fromarray(px.astype(np.uint8)).save(d / f"{i}.{ext}")
    (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def cfg_for(data: Path, out: Path, **kw) -> Config:
    # 32 px crops and resnet18 (mobilenet_v3_small stays at chance in eval mode from random init):
    # two epochs learn red vs blue in ~1-3 s.
    base = dict(data=data, out=out, backbone="resnet18", weights="none", epochs=2, batch_size=8,
                lr=0.003, resize=40, crop=32, workers=0, device="cpu", seed=0)
    return Config(**{**base, **kw})


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    return train(cfg_for(data, tmp_path_factory.mktemp("runs")))


def test_full_run_outputs(full_run, data):
    run_dir, doc = full_run
    assert run_dir.name == f"{data.name}-resnet18-none-finetune-full"
    hist = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all(KEYS <= h.keys() for h in hist)
    assert hist[1]["train_loss"] < hist[0]["train_loss"] or hist[1]["train_acc"] > hist[0]["train_acc"]
    assert doc["val"]["accuracy"] == 1.0 and doc["n_train"] == 128 and doc["n_val"] == 12
    assert doc["short"] == "full FT" and doc["method"].startswith("full fine-tuning, fast loop")
    assert doc["stage"] == "finetune" and doc["selection"] == "last epoch"
    assert doc["command"] == (f"python -m pipeline finetune --device cpu --workers 0 --batch-size 8 --data {data} "
                              f"--weights none --out {run_dir.parent} --epochs 2 --lr 0.003 --resize 40 --crop 32")
    assert doc["val"]["log_loss"] is not None and len(doc["predictions"]) == 12
    assert set(doc["seconds"]) == {"train", "decode", "predict"} and doc["best_val"]["epoch"] in (1, 2)
    assert [p for p, _ in doc["skipped"]["train"]] == ["train/red/broken.jpg"]
    assert json.loads((run_dir / "metrics.json").read_text())["val"]["accuracy"] == 1.0
    assert (run_dir / "best.pt").is_file()
    lines = (run_dir / "predictions.csv").read_text().splitlines()
    assert lines[0] == "path,true,predicted,probability,loss,correct" and len(lines) == 13
    worst = lines[1].split(",")
    by_path = {p["path"]: p for p in doc["predictions"]}
    assert float(worst[4]) == pytest.approx(max(p["loss"] for p in doc["predictions"]), rel=1e-5)
    assert float(worst[3]) == pytest.approx(by_path[worst[0]]["score"], rel=1e-5)


def test_a_torchvision_run_normalises_and_records_imagenet_mean_and_std_as_before(full_run):
    """A torchvision backbone's run keeps the tutorial's normalisation: in its fingerprint (so a
    rerun of an existing run is still a hit), in model.json (what predict and export read) and in
    the recorded hyperparameters."""
    run_dir, doc = full_run
    imagenet = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    spec = json.loads((run_dir / "model.json").read_text())
    assert {k: doc["inputs"]["transform"][k] for k in ("resize", "crop", "interpolation", "mean", "std")} == {
        "resize": 40, "crop": 32, "interpolation": "bilinear", **imagenet}
    assert {k: spec[k] for k in imagenet} == imagenet
    assert {k: list(doc["hyperparameters"][k]) for k in imagenet} == imagenet


def test_final_reloads_to_same_predictions(full_run, data):
    assert_reloads_to_same_predictions(*full_run, data)


def assert_reloads_to_same_predictions(run_dir, doc, data):
    """final.pt in a fresh eager model gives the run's recorded val predictions."""
    spec = json.loads((run_dir / "model.json").read_text())
    assert spec["kind"] == "finetune" and spec["classes"] == ["blue", "red"] and spec["weights_arg"] == "none"
    model = classifier(load_backbone(spec["backbone"], "none"), len(spec["classes"]))
    model.load_state_dict(torch.load(run_dir / spec["file"], weights_only=True))
    tf = eval_transform(spec["resize"], spec["crop"])
    x = torch.stack([tf(load_rgb(data / p["path"], draft=spec["resize"])) for p in doc["predictions"]])
    with torch.no_grad():
        probs = model.eval()(normalize(x, channels_last=False)).softmax(1)
    assert probs.argmax(1).tolist() == [p["pred"] for p in doc["predictions"]]
    assert np.allclose(probs.max(1).values.numpy(), [p["score"] for p in doc["predictions"]], atol=1e-4)


def test_predict_command_uses_the_checkpoint(full_run, data):
    from pipeline.stages.predict import Config as PConfig, predict
    run_dir, doc = full_run
    rows, _, kind = predict(PConfig(model=run_dir, images=(str(data / "val"),), device="cpu"))
    assert kind == "probability"
    want = {p["path"]: doc["classes"][p["pred"]] for p in doc["predictions"]}
    assert {str(Path(path).relative_to(data)): cls for path, cls, _ in rows} == want


def test_frozen_fast_keeps_trunk(data, tmp_path):
    cfg = cfg_for(data, tmp_path, mode="frozen")
    _, init = build(cfg.recipe, 2)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    run_dir, doc = train(cfg)
    after = torch.load(run_dir / "final.pt", weights_only=True)
    trunk = [k for k in before if k.startswith("trunk.")]
    assert any("running_mean" in k for k in trunk)  # BN buffers are part of the check
    assert all(torch.equal(before[k], after[k]) for k in trunk)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert doc["short"] == "frozen, BN eval" and doc["mode"] == "frozen"
    assert doc["hyperparameters"]["trunk_mode"] == "eval"


def test_the_tutorial_frozen_scheme_lets_batchnorm_drift_and_is_named_for_it(data, tmp_path):
    cfg = cfg_for(data, tmp_path, mode="frozen", loop="reference", epochs=1)
    _, init = build(cfg.recipe, 2)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    run_dir, doc = train(cfg)
    after = torch.load(run_dir / "final.pt", weights_only=True)
    means = [k for k in before if k.startswith("trunk.") and k.endswith("running_mean")]
    weights = [k for k in before if k.startswith("trunk.") and k.endswith(".weight")]
    assert all(torch.equal(before[k], after[k]) for k in weights)  # no trunk parameter is trained...
    assert not all(torch.equal(before[k], after[k]) for k in means)  # ...but BatchNorm statistics move
    assert doc["short"] == "frozen, BN train (tutorial loop)" and doc["hyperparameters"]["trunk_mode"] == "train"
    assert "BatchNorm in train mode" in doc["method"]


def test_reference_matches_fast(full_run, data, tmp_path):
    run_dir, doc = train(cfg_for(data, tmp_path, loop="reference"))
    assert run_dir.name.endswith("-finetune-full-reference")
    assert doc["short"] == "full FT (tutorial loop)" and doc["seconds"]["decode"] == 0.0
    assert doc["val"]["accuracy"] == full_run[1]["val"]["accuracy"] == 1.0
    assert [p for p, _ in doc["skipped"]["train"]] == ["train/red/broken.jpg"]


def test_same_seed_same_history(full_run, data, tmp_path):
    _, doc = train(cfg_for(data, tmp_path))
    a = json.loads((full_run[0] / "history.json").read_text())
    b = json.loads((tmp_path / full_run[0].name / "history.json").read_text())
    for h, k in zip(a, b):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert h[key] == pytest.approx(k[key], abs=1e-6)


def test_crop_params_follow_torchvision():
    rng = np.random.default_rng(1)
    for _ in range(500):
        h, w = rng.integers(20, 300, 2)
        i, j, ch, cw = crop_params(int(h), int(w), rng.random(23).tolist())
        assert 0 <= i <= h - ch and 0 <= j <= w - cw and 0 < ch <= h and 0 < cw <= w
        if ch * cw < h * w:  # a sampled crop: area fraction and aspect ratio inside the recipe's ranges
            assert 0.06 <= ch * cw / (h * w) <= 1.0 and 3 / 4 - 0.05 <= cw / ch <= 4 / 3 + 0.05
    x = augment([torch.zeros(3, 40, 50, dtype=torch.uint8), torch.zeros(3, 60, 40, dtype=torch.uint8)], 32,
                torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8


def test_bad_settings_are_user_errors(data, tmp_path):
    with pytest.raises(UserError):
        train(cfg_for(data, tmp_path, crop=64, resize=40))
    with pytest.raises(UserError):
        train(replace(cfg_for(data, tmp_path), splits="train"))


def test_finetune_under_torchrun_is_refused_in_one_line_before_any_work(data, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: each rank would train the whole run alone
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(UserError, match="runs in one process: under torchrun"):
        train(cfg_for(data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--mode", "bogus"], ["--data", "/nonexistent/dir", "--weights", "none"]])
def test_cli_errors(args, tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline", "finetune", *args, "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "error" in r.stderr


def test_rerun_with_the_same_inputs_does_no_work(full_run, data, capsys, monkeypatch):
    run_dir, doc = full_run
    cfg = cfg_for(data, run_dir.parent)
    import pipeline.images.datasets as E
    monkeypatch.setattr(E, "decode_once", lambda *a, **k: pytest.fail("a hit decodes nothing"))
    again_dir, again = train(cfg)
    assert again_dir == run_dir and again == json.loads((run_dir / "metrics.json").read_text())
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(pytest.fail.Exception):
        train(replace(cfg, force=True))


@pytest.mark.parametrize("loop", ["fast", "reference"])
def test_killed_run_resumes_to_the_uninterrupted_history(data, tmp_path, monkeypatch, loop):
    from pipeline.finetune import checkpoint
    keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
    cfg = cfg_for(data, tmp_path / "whole", epochs=3, loop=loop, step_size=2)
    run_dir, _ = train(cfg)
    want = [{k: h[k] for k in keys} for h in json.loads((run_dir / "history.json").read_text())]

    real_save = checkpoint.save

    def killed_after_epoch_2(path, **kw):
        real_save(path, **kw)
        if len(kw["progress"].history) == 2:
            raise KeyboardInterrupt  # as if killed right after epoch 2 was saved
    monkeypatch.setattr(checkpoint, "save", killed_after_epoch_2)
    cut = replace(cfg, out=tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert not (tmp_path / "cut" / run_dir.name).exists()  # nothing half-done in place of a run
    run2, doc = train(cut)
    got = [{k: h[k] for k in keys} for h in json.loads((run2 / "history.json").read_text())]
    assert got == want and doc["val"] == json.loads((run_dir / "metrics.json").read_text())["val"]
    assert not (run2 / "checkpoint.pt").exists() and not any(p.name.startswith(".") for p in run2.parent.iterdir()
                                                             if p.is_dir())


def test_compile_and_augment_apply_to_the_fast_loop_only(data, tmp_path):
    for kw in ({"compile": True}, {"augment": "batched"}):
        with pytest.raises(UserError, match="--loop fast"):
            cfg_for(data, tmp_path, loop="reference", **kw)


def test_compiled_fast_loop_saves_and_scores_the_model_it_trained(data, tmp_path):
    """torch.compile (inductor on CPU; CUDA graphs on a GPU) wraps the model, sharing its
    parameters: the saved weights, reloaded into a plain model, give the predictions the compiled
    run recorded, and the compile time is recorded apart from the epochs. (Losses are not compared
    with an eager run: from random weights, BatchNorm over 8 images turns rounding differences of
    1e-7 into 0.5% gradient differences at the first step, and training amplifies them.)"""
    run_dir, doc = train(cfg_for(data, tmp_path, compile=True, epochs=1))
    assert_reloads_to_same_predictions(run_dir, doc, data)
    hist = json.loads((run_dir / "history.json").read_text())
    assert hist[0]["compile_seconds"] > 0 and doc["seconds"]["compile"] == hist[0]["compile_seconds"]
    assert doc["hyperparameters"]["compile"] is True and doc["hyperparameters"]["augment"].startswith("per image")


def test_compiled_frozen_trunk_trains_the_head_as_the_eager_one(data, tmp_path):
    kw = dict(mode="frozen", epochs=1)
    eager = train(cfg_for(data, tmp_path / "eager", **kw))[0]
    compiled = train(cfg_for(data, tmp_path / "compiled", compile=True, **kw))[0]
    h, r = (json.loads((d / "history.json").read_text())[0] for d in (compiled, eager))
    for key in ("train_loss", "val_loss"):  # a frozen, BN-folded trunk: well conditioned, rounding stays small
        assert h[key] == pytest.approx(r[key], rel=1e-4)


def test_batched_augmentation_trains_and_is_recorded(data, tmp_path):
    _, doc = train(cfg_for(data, tmp_path, augment="batched"))
    assert doc["hyperparameters"]["augment"].startswith("batched")
    assert doc["val"]["accuracy"] == 1.0  # red vs blue is learnt either way


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fast_loop_with_cuda_graphs_matches_eager(data, tmp_path):
    eager = train(cfg_for(data, tmp_path / "eager", device="cuda"))[1]
    graphs = train(cfg_for(data, tmp_path / "graphs", device="cuda", compile=True))[1]
    assert graphs["hyperparameters"]["augment"].startswith("batched")  # auto on a GPU
    assert abs(graphs["val"]["correct"] - eager["val"]["correct"]) <= 1


@pytest.mark.parametrize("loop", ["fast", "reference"])
def test_tuned_learning_rate_is_chosen_on_held_out_train_images_and_its_cost_counted(data, tmp_path, loop):
    run_dir, doc = train(cfg_for(data, tmp_path, loop=loop, tune_lr=True, lr_grid="0.0001,0.003", holdout=0.25))
    sel = doc["lr_selection"]
    assert run_dir.name.endswith("-tuned") and doc["short"].endswith(", lr tuned")
    assert [t["lr"] for t in sel["trials"]] == [0.0001, 0.003] and sel["chosen"] in (0.0001, 0.003)
    assert doc["hyperparameters"]["lr"] == sel["chosen"] and sel["recipe_lr"] == 0.003
    assert sel["held_out"] + sel["trained_on"] == doc["n_train"] and sel["held_out"] >= 2
    assert doc["seconds"]["tune"] == pytest.approx(sel["seconds"]) and sel["seconds"] > 0
    best = max(sel["trials"], key=lambda t: t["held_out_accuracy"])
    assert best["held_out_accuracy"] == max(t["held_out_accuracy"] for t in sel["trials"])


def test_held_out_part_comes_from_train_only_and_is_stratified(data):
    from pipeline.finetune.tune import held_out
    from pipeline.images.datasets import decode_once
    from pipeline.images.scan import scan
    from pipeline.images.transforms import Preprocess

    s = scan(data)
    d = decode_once(s.root, s, ("train", "val"), keep=True, pre=Preprocess(40, 32), workers=0,
                    device=torch.device("cpu"))
    part = held_out(d, 0.25, seed=0, crop=32)
    train_paths = {r.path for r in d.train}
    assert {r.path for r in part.val} <= train_paths and {r.path for r in part.train} <= train_paths
    assert not {r.path for r in part.val} & {r.path for r in part.train}
    assert sorted({r.label for r in part.val}) == sorted({r.label for r in d.train})  # every class held out
    assert part.val_images.shape[1:] == (3, 32, 32) and len(part.train_images) == len(part.train)
    assert held_out(d, 0.25, seed=0, crop=32).val == part.val  # seeded


def test_eval_transform_follows_the_weights_as_features_does():
    r = Config(backbone="mobilenet_v2", weights="IMAGENET1K_V2").recipe
    assert (r.pre.resize, r.pre.crop) == (232, 224) and "transforms()" in r.pre.source
    assert (r.pre.mean, r.pre.std) == (IMAGENET_MEAN, IMAGENET_STD)
    r = Config(backbone="mobilenet_v2", weights="none").recipe
    assert (r.pre.resize, r.pre.crop, r.pre.interpolation) == (256, 224, "bilinear")
    assert (r.pre.mean, r.pre.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert Config(weights="none", resize=40, crop=32).recipe.pre.resize == 40


def test_splits_and_shares_are_validated_where_declared():
    for bad in (dict(splits="train"), dict(splits="a,a"), dict(split="0.5,0.5"), dict(weights="no such thing!")):
        with pytest.raises(UserError):
            Config(**bad)


def test_repeats_redraw_the_images_classify_redraws_and_the_report_pairs_them(data, tmp_path, monkeypatch):
    """finetune --repeats R: the recipe on each of classify's R re-drawn splits (the same images, so
    the two pair by repeat), R accuracies recorded with their cost, mean ± sd in the report."""
    from pipeline.finetune import repeats as ft_repeats
    from pipeline.heads.repeats import splits
    from pipeline.stages import classify as cl, features, report
    from pipeline.codes.store import read_codes

    feats = features.extract(features.Config(data=data, out=str(tmp_path / "f.h5"), weights="none", resize=40,
                                             crop=32, workers=0, device="cpu", batch_size=32))
    pooled_by_classify = []
    real = cl.repeated_scores
    monkeypatch.setattr(cl, "repeated_scores", lambda name, X, y, *a, **kw: (
        pooled_by_classify.append(X.copy()), real(name, X, y, *a, **kw))[1])
    [head] = cl.classify(cl.Config(features=feats, head="softmax", out=tmp_path / "runs", folds=3,
                                   label_curve="off", repeats=2))
    codes = read_codes(feats)
    tr, va = codes.splits["train"], codes.splits["val"]
    paths, y = [*tr.paths, *va.paths], np.concatenate([tr.labels, va.labels])
    assert np.array_equal(pooled_by_classify[0], np.concatenate([tr.codes, va.codes]))  # classify pools in file order
    want = [[paths[i] for i in te] for _, te in splits(y, len(va.labels), 2, 0)]

    seen = []
    real_redrawn = ft_repeats.redrawn
    monkeypatch.setattr(ft_repeats, "redrawn", lambda *a: seen.append(real_redrawn(*a)) or seen[-1])
    run_dir, doc = train(cfg_for(data, tmp_path / "runs", epochs=1, repeats=2))
    assert [[r.path for r in part.val] for part in seen] == want  # repeat r: the same val images as classify's
    assert all(part.val_images.shape[0] == len(part.val) and len(part.train_images) == len(part.train)
               for part in seen)
    rep, hrep = doc["repeats"], json.loads((head / "metrics.json").read_text())["repeats"]
    assert len(rep["accuracy"]) == 2 and rep["mean"] == pytest.approx(np.mean(rep["accuracy"]))
    assert (rep["repeats"], rep["seed"], rep["n_test"], rep["n_train"]) == \
        (hrep["repeats"], hrep["seed"], hrep["n_test"], hrep["n_train"]) == (2, 0, 12, 128)
    assert rep["pooled"] == hrep["pooled"]  # the digest of the pooled images, which the verdict's pairing checks
    assert rep["chosen"] == [0.003, 0.003] and "fixed" in rep["lr_selection"]
    assert doc["seconds"]["repeats"] == pytest.approx(rep["seconds"]) and rep["seconds"] > 0  # recorded apart
    report.run(report.Config(runs=tmp_path / "runs", out=tmp_path / "rep", bench=tmp_path / "none.json"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Re-drawn splits, mean ± sd" in md
    # the row of the table that has the re-drawn-splits column: which table comes first, and whether
    # the fine-tune is starred as best, depends on what this processor's kernels make of epoch 1
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|") and "Re-drawn splits, mean ± sd" in line)
    end = next((k for k in range(start, len(lines)) if not lines[k].startswith("|")), len(lines))
    table = lines[start:end]
    ft_line = next(line for line in table if re.match(r"\|\s*(★\s*)?full FT\b", line))
    assert f"± {100 * rep['sd']:.1f} (2)" in ft_line
    v = {m["name"]: m for m in json.loads((tmp_path / "rep" / "verdict.json").read_text())["methods"]}
    assert v["full FT"]["repeats"]["repeats"] == 2
    if any(a != b for a, b in zip(rep["accuracy"], hrep["accuracy"])):  # equal draws: nothing to test
        # the one that is not the anchor (the best of the repeated methods, which the tie-break on val
        # decides) carries the paired test against the other
        paired = [m["repeats"] for m in (v["full FT"], v["softmax"]) if "vs" in m["repeats"]]
        assert len(paired) == 1 and paired[0]["test"] == "corrected resampled t (Nadeau-Bengio)"
        assert paired[0]["vs"] in {"full FT", "softmax"}


def test_repeats_are_validated_and_tuned_per_draw(data, tmp_path):
    for bad in (dict(repeats=1), dict(repeats=-2), dict(repeats=2, loop="codes", mode="frozen", features="x.h5")):
        with pytest.raises(UserError, match="--repeats"):
            Config(**bad)
    _, doc = train(cfg_for(data, tmp_path, epochs=1, repeats=2, loop="reference", tune_lr=True,
                           lr_grid="0.0001,0.003", holdout=0.25))
    rep = doc["repeats"]
    assert len(rep["accuracy"]) == 2 and set(rep["chosen"]) <= {0.0001, 0.003}
    assert "each re-drawn" in rep["lr_selection"]
    assert {"repeats", "tune"} <= set(doc["seconds"])
