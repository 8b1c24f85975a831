"""export: one ONNX file and a standalone predict.py that label images as `predict` does.

A tiny red-vs-blue folder, resnet18 with random weights at 32 px; every head kind and a 1-epoch
fine-tune are exported (~10 s each: torch's dynamo exporter) and the standalone script, run as
`python -I -X importtime DIR/predict.py`, is compared with `predict` on every image.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

from conftest import ROOT, make_folder, make_image  # noqa: E402
from pipeline import UserError  # noqa: E402
from pipeline.export import standalone  # noqa: E402
from pipeline.stages.classify import Config as CConfig, classify  # noqa: E402
from pipeline.stages.export import Config, run  # noqa: E402
from pipeline.stages.features import Config as FConfig, extract  # noqa: E402
from pipeline.stages.finetune import Config as TConfig, train  # noqa: E402
from pipeline.stages.predict import Config as PConfig, predict  # noqa: E402

HEADS = ("softmax", "linsvc", "linear", "knn")
# `cnncodes export` through the real CLI entry point, whether or not STAGES lists it yet
CLI = ("import sys; from pipeline.__main__ import STAGES, main; "
       "STAGES.setdefault('export', ('pipeline.stages.export', 'export a run')); sys.exit(main(sys.argv[1:]))")


def export_cli(*args):
    return subprocess.run([sys.executable, "-c", CLI, "export", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("export") / "data")


@pytest.fixture(scope="module")
def new(data) -> Path:
    """Images to label: odd sizes and modes, a JPEG large enough for draft decoding, a broken file."""
    d = data.parent / "new"
    make_image(d / "big.jpg", (200, 40, 40), size=(200, 150))  # draft: decoded at 1/2
    make_image(d / "tall.png", (40, 40, 200), size=(33, 71))
    make_image(d / "grey.png", (90, 90, 200), size=(50, 40), mode="L")
    make_image(d / "alpha.png", (200, 60, 60), size=(45, 45), mode="RGBA")
    Image.fromarray((np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) * 30)).save(d / "deep.png")  # 16-bit
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return d


@pytest.fixture(scope="module")
def runs(data) -> dict[str, Path]:
    """kind -> run folder: every in-memory head on random-weight codes, and a 1-epoch fine-tune."""
    out = data.parent / "runs"
    feats = extract(FConfig(data=data, backbone="resnet18", weights="none", out=str(data.parent / "f.h5"),
                            device="cpu", workers=0, resize=40, crop=32))
    found = {}
    for head in HEADS:
        [found[head]] = classify(CConfig(features=feats, head=head, out=out, folds=3, label_curve="off"))
    found["finetune"], _ = train(TConfig(data=data, out=out, backbone="resnet18", weights="none", epochs=1,
                                         batch_size=8, resize=40, crop=32, workers=0, device="cpu"))
    return found


def standalone_rows(script: Path, *images) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run DIR/predict.py isolated (-I: no PYTHON* variables, no user site, not even its own folder
    on sys.path) with -X importtime, and check it imported none of torch, sklearn or this package."""
    r = subprocess.run([sys.executable, "-I", "-X", "importtime", str(script), *map(str, images)],
                       capture_output=True, text=True, timeout=300)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in r.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "onnxruntime" in imported and not imported & {"torch", "torchvision", "pipeline", "sklearn", "h5py"}
    return r, [line.split("\t") for line in r.stdout.splitlines()]


@pytest.fixture(scope="module")
def shipped(runs, data, tmp_path_factory):
    """kind -> (export folder, exit code, printed text) of `run`, each kind exported once."""
    done = {}

    def ship(kind: str):
        if kind not in done:
            out, buf = tmp_path_factory.mktemp(f"shipped-{kind}"), io.StringIO()
            with contextlib.redirect_stdout(buf):
                rc = run(Config(model=runs[kind], out=out, images=str(data / "val")))
            done[kind] = out, rc, buf.getvalue()
        return done[kind]
    return ship


@pytest.mark.parametrize("kind", [*HEADS, "finetune"])
def test_standalone_script_labels_as_predict_does(kind, runs, data, new, shipped):
    out, rc, text = shipped(kind)
    score = "margin" if kind == "linsvc" else "probability"
    # size, ms per image beside predict's, and onnxruntime's scores against predict's on 32 images
    mb = float(re.search(r"\(([0-9.]+) MB, opset \d+\)", text).group(1))
    assert rc == 0 and abs(mb - (out / "model.onnx").stat().st_size / 1e6) < 0.1 and f", {score};" in text
    assert "  onnxruntime  batch  1:" in text and "  predict      batch  1:" in text and "batch 32:" in text
    assert "32/32 labels agree" in text and float(re.search(r"difference\| (\S+)", text).group(1)) < 1e-4
    # the run's --reject rule is in the file, and its decisions are predict --reject's
    assert "reject rule in the file: " in text and "32/32 unknown-or-not decisions agree" in text

    proc, rows = standalone_rows(out / "predict.py", data / "val", new)
    want, bad, pkind = predict(PConfig(model=runs[kind], images=(str(data / "val"), str(new)), device="cpu",
                                       workers=0))
    assert rows[0] == ["path", "class", pkind] and pkind == score
    assert [p for p, *_ in rows[1:]] == [p for p, *_ in want] and len(want) == 8 + 5
    for (_, cls, v), (_, cls2, v2) in zip(rows[1:], want):
        assert cls == cls2 and abs(float(v) - v2) <= 1e-3
    # the unreadable file: named on stderr, exit code 1, as predict
    assert proc.returncode == 1 and [p for p, _ in bad] == [str(new / "broken.jpg")]
    assert f"{new / 'broken.jpg'}: not labelled: undecodable" in proc.stderr


def test_metadata_holds_classes_and_recipe(shipped):
    import onnxruntime as ort

    out, _, _ = shipped("linsvc")
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == ["ants", "bees"] and meta["score"] == "margin"
    assert (meta["resize"], meta["crop"], meta["interpolation"], meta["decode"]) == ("40", "32", "bilinear",
                                                                                      "PIL draft>=40")
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406] and json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    [i] = sess.get_inputs()
    assert (i.name, i.type, i.shape[1:]) == ("image", "tensor(uint8)", [3, 32, 32])
    # any batch size; the label is the arg max of the scores
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    scores, label, distance = sess.run(None, {"image": x})  # distance: the run's --reject rule's score
    assert scores.shape == (5, 2) and (label == scores.argmax(1)).all() and distance.shape == (5,)
    assert [o.name for o in sess.get_outputs()] == ["scores", "label", "distance"]


def test_without_images_the_check_runs_on_random_pixels():
    from pipeline.export.check import sample
    from pipeline.images.transforms import Preprocess

    x, what = sample("", Preprocess(40, 32), True)
    assert x.shape == (32, 3, 32, 32) and x.dtype == np.uint8 and what == "32 random-pixel images"
    with pytest.raises(UserError, match="does not exist"):
        sample("/no/such/folder", Preprocess(40, 32), True)


@pytest.mark.parametrize("interpolation,resize,crop", [("bilinear", 40, 32), ("bicubic", 37, 33),
                                                       ("lanczos", 64, 48), ("nearest", 20, 32)])
def test_standalone_preprocessing_is_torchvisions_to_the_pixel(new, data, interpolation, resize, crop):
    from pipeline.images.decode import load_rgb
    from pipeline.images.transforms import eval_transform

    tf = eval_transform(resize, crop, interpolation)
    recipe = {"resize": resize, "crop": crop, "filter": standalone.FILTERS[interpolation], "draft": resize}
    files = [p for p in sorted(new.iterdir()) if p.name != "broken.jpg"] + sorted((data / "val").rglob("*.jpg"))
    for p in files:
        np.testing.assert_array_equal(standalone.preprocess(p, recipe), tf(load_rgb(p, resize)).numpy(), err_msg=p.name)


def test_heads_fold_into_one_linear_layer_with_sklearns_scores():
    """Each linear head's module (scaler folded in, its link) gives predict_proba or the margins
    predict prints; a head of another shape is refused with the reason."""
    import torch
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    from pipeline.export.model import head_module
    from pipeline.heads.linear_svm import LinearSVM

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(60, 7)) * rng.uniform(0.1, 5, 7) + rng.normal(size=7) * 3).astype(np.float32)
    for n_classes in (2, 3):
        y = np.arange(60) % n_classes
        for clf in (LogisticRegression(), LinearSVM(), SGDClassifier(loss="log_loss", random_state=0),
                    SGDClassifier(loss="hinge", random_state=0)):
            head = Pipeline([("scale", StandardScaler()), ("clf", clf)]).fit(X, y)
            module, score = head_module(head)
            got = module(torch.from_numpy(X)).numpy()
            if hasattr(head, "predict_proba"):
                want = head.predict_proba(X)
            else:
                d = head.decision_function(X)
                want = np.stack([-d, d], 1) if d.ndim == 1 else d
            assert score == ("probability" if hasattr(head, "predict_proba") else "margin")
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{type(clf).__name__} {n_classes}")
    odd = Pipeline([("l2", Normalizer()), ("clf", LogisticRegression())]).fit(X, np.arange(60) % 2)
    with pytest.raises(UserError, match="cannot export a head made of Normalizer"):
        head_module(odd)


def test_a_missing_or_foreign_run_folder_is_one_line_exit_2(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.json").write_text('{"kind": "report"}')
    (tmp_path / "plain").mkdir()
    for model, why in ((tmp_path / "absent", "is not a run folder"), (tmp_path / "plain", "is not a run folder"),
                       (foreign, "of kind 'report'")):
        r = export_cli("--model", model, "--out", tmp_path / "o")
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "o").exists()


def test_standalone_script_refuses_bad_arguments_in_one_line(tmp_path):
    script = tmp_path / "predict.py"
    script.write_text(Path(standalone.__file__).read_text())
    make_image(tmp_path / "a.jpg", (10, 20, 30))
    for args, why in (((tmp_path / "nothing.jpg",), "does not exist"), ((tmp_path / "a.jpg",), "model file")):
        r = subprocess.run([sys.executable, "-I", str(script), *map(str, args)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_standalone_lists_the_image_types_the_pipeline_does():
    from pipeline.images.scan import IMG_EXTENSIONS

    assert standalone.IMG_EXTENSIONS == IMG_EXTENSIONS  # the script cannot import them: a copy, kept equal


@pytest.fixture(scope="module")
def unseen(data) -> Path:
    """A colour neither class has: far from every training image."""
    d = data.parent / "green"
    for i in range(6):
        make_image(d / f"g{i}.jpg", (40, 200, 40), seed=500 + i)
    return d


@pytest.mark.parametrize("kind", ["softmax", "knn", "finetune"])
def test_standalone_reject_marks_unknown_as_predict_reject_does(kind, runs, data, new, unseen, shipped):
    """`predict.py --reject` prints predict --reject's rows (the class kept, status 'unknown' for the
    far images) from the rule in the file: the threshold in the metadata, the score an output of the graph."""
    import onnxruntime as ort

    out, rc, text = shipped(kind)
    rule = json.loads((runs[kind] / "model.json").read_text())["reject"]
    meta = ort.InferenceSession(str(out / "model.onnx")).get_modelmeta().custom_metadata_map
    got_rule = json.loads(meta["reject"])
    assert got_rule["threshold"] == rule["threshold"] and got_rule["rule"] == rule["rule"]
    stored = [] if kind == "finetune" else list(np.load(runs[kind] / rule["file"]).shape)  # 12 x 512: resnet18
    assert got_rule["reference_codes"] == stored
    proc, rows = standalone_rows(out / "predict.py", "--reject", data / "val", unseen, new)
    want, _, _ = predict(PConfig(model=runs[kind], images=(str(data / "val"), str(unseen), str(new)), device="cpu",
                                 workers=0, reject=True, precision="fp32"))
    assert rows[0][-1] == "status" and proc.returncode == 1  # broken.jpg
    assert [[r[0], r[1], r[3]] for r in rows[1:]] == [[p, c, s] for p, c, _, s in want]
    for (_, _, v, _), (_, _, v2, _) in zip(rows[1:], want):
        assert abs(float(v) - v2) <= 1e-3
    assert all(c in ("ants", "bees") for _, c, _, _ in want)  # a far image keeps its class
    if kind != "finetune":  # the distance rule: the green images are far from every training image
        assert sum(s == "unknown" for p, _, _, s in want if "green" in p) >= 4


def test_a_file_without_the_rule_refuses_reject_in_one_line(runs, shipped, tmp_path):
    import onnx

    from pipeline.export.model import build
    from pipeline.runs.folder import read_model

    spec = read_model(runs["softmax"])
    assert build(runs["softmax"], spec, reject=False).reject is None  # --no-reject: two outputs, no rule
    model = onnx.load(str(shipped("softmax")[0] / "model.onnx"))
    keep = [p for p in model.metadata_props if p.key != "reject"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(tmp_path / "old.onnx"))
    script = tmp_path / "predict.py"
    script.write_text(Path(standalone.__file__).read_text())
    make_image(tmp_path / "a.jpg", (10, 20, 30))
    r = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "a.jpg"), "--reject", "--model",
                        str(tmp_path / "old.onnx")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "holds no rejection rule" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    plain = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "a.jpg"), "--model",
                            str(tmp_path / "old.onnx")], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and plain.stdout.splitlines()[1].split("\t")[1] in ("ants", "bees")


def test_a_knn_head_past_the_cap_is_refused_in_one_line_before_anything_is_written(runs, tmp_path, monkeypatch):
    from pipeline.export import model

    n = len(np.load(runs["knn"] / "reject.npy")) if (runs["knn"] / "reject.npy").exists() else None
    monkeypatch.setattr(model, "CODES_MAX", 3)  # the cap lowered: the tiny run's k-NN votes among more
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for out in (tmp_path / "new", kept):
        with pytest.raises(UserError) as e:
            run(Config(model=runs["knn"], out=out, check=False))
        msg = str(e.value)
        assert "\n" not in msg and "over the 3 an exported file holds" in msg and "softmax or linear head" in msg
        assert re.search(r"among (\d+) training codes \(\1 x 512 float32", msg)
        assert n is None or f"among {n} training codes" in msg
    assert not (tmp_path / "new").exists() and [p.name for p in kept.iterdir()] == ["notes.txt"]
    # one rule for the --reject references too (a run's reject.npy past the cap: made before classify subsampled)
    with pytest.raises(UserError, match=r"measures distance to \d+ training codes, over the 3 .*; or export "
                                        "without the rule: --no-reject"):
        run(Config(model=runs["softmax"], out=tmp_path / "softmax", check=False))
    assert not (tmp_path / "softmax").exists()
    # a linear head holds no training codes for its vote: without the rule it is exported under the lowered cap
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(Config(model=runs["softmax"], out=tmp_path / "softmax", check=False, reject=False)) == 0
    assert (tmp_path / "softmax" / "model.onnx").is_file()
    # at the cap itself the head is exported, every training code in its vote
    stored = int(re.search(r"among (\d+)", msg).group(1))
    monkeypatch.setattr(model, "CODES_MAX", stored)
    built = model.build(runs["knn"], json.loads((runs["knn"] / "model.json").read_text()))
    assert built.module.head.stored.shape[0] == stored and built.reference_shape[0] == stored
