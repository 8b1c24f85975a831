"""Shared fixtures: synthetic ImageFolders, and the ../shared data and weights when present."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.codes.synthetic import write_synthetic_codes  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HYMENOPTERA = SHARED / "data" / "hymenoptera_data"
MOBILENET = SHARED / "weights" / "mobilenet_v2_imagenet_features.pth"

needs_shared = pytest.mark.skipif(not (HYMENOPTERA.is_dir() and MOBILENET.is_file()),
                                  reason="../shared hymenoptera data and MobileNetV2 weights not present")


@pytest.fixture(scope="session", autouse=True)
def fp32_on_every_processor():
    """The suite compares CPU results with fp32 references (onnxruntime, a reloaded checkpoint,
    classify's scores), so in this process --precision auto picks fp32 whatever the processor has
    (core.devices.cpu_bf16 answers no); tests/test_precision.py sets the answer itself. Stages run
    as subprocesses ask the processor."""
    from pipeline.core import devices

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(devices, "cpu_bf16", lambda: False)
        yield


@pytest.fixture(scope="session", autouse=True)
def precision_cache_in_tmp(tmp_path_factory):
    """--precision auto's decisions (core.precision) go to a file of this session, never the user's;
    subprocesses inherit the variable."""
    from pipeline.core.precision import CACHE_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("precision") / "precision.json"))
        yield


@pytest.fixture(scope="session", autouse=True)
def quick_cost_harness():
    """Every run times its model with core.timing's harness; the suite asks for its quick plan (one
    call of 4 images), in this process and in the stages it runs as subprocesses."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNCODES_COST", "quick")
        yield


def make_image(path: Path, color, size=(64, 48), mode="RGB", seed=0):
    """A noisy image dominated by `color`, saved in the format of its extension."""
    rng = np.random.default_rng(seed)
    arr = np.clip(
        np.array(color, dtype=np.int16)[None, None, :] + rng.integers(-30, 30, (size[1], size[0], 3)), 0, 255
    ).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def touch(path: Path, data=b"x") -> Path:
    """A file the scan lists (it stats, never decodes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def file_tree(root: Path, folders, classes=("ants", "bees"), n=6) -> Path:
    """root/<folder>/<class>/<class>NN.jpg, n placeholder files per class: a folder's shape, no images."""
    for folder in folders:
        for c in classes:
            for i in range(n):
                touch(root / folder / c / f"{c}{i:02d}.jpg")
    return root


def make_folder(root: Path, n_train=6, n_val=4, classes=("ants", "bees"), size=(64, 48)) -> Path:
    colors = [(200, 40, 40), (40, 40, 200), (40, 200, 40)]
    for split, n in (("train", n_train), ("val", n_val)):
        for ci, c in enumerate(classes):
            for i in range(n):
                make_image(
                    root / split / c / f"img{i:03d}.jpg", colors[ci], size=size, seed=hash((split, c, i)) % 2**32
                )
    return root


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "data")


def cli(*args, cwd=None):
    """Run `python -m pipeline ...` in a subprocess; returns CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600)


@pytest.fixture(scope="session")
def hymenoptera_codes(tmp_path_factory):
    """Real MobileNetV2 codes of hymenoptera, extracted once per test session."""
    if not (HYMENOPTERA.is_dir() and MOBILENET.is_file()):
        pytest.skip("../shared hymenoptera data and MobileNetV2 weights not present")
    from pipeline.stages.features import Config, extract
    out = tmp_path_factory.mktemp("hym") / "mobilenet_v2.h5"
    return extract(
        Config(data=HYMENOPTERA, backbone="mobilenet_v2", weights=str(MOBILENET), out=str(out), device="cpu")
    )
