"""The exported file against predict's own computation on the same images: CPU milliseconds per
image (model only: the images are decoded and cropped once, before the clock; warm: after two
untimed calls; best of three passes) at batch 1 and 32, and how far apart the scores are.

predict's side is what stages/predict.py runs per batch (a stage is imported by nothing, so it is
rebuilt here from the same parts): the BN-folded channels_last Encoder and the scikit-learn head
for a head on codes, the checkpoint's classifier and a softmax for a fine-tune.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .. import UserError
from ..images.scan import IMG_EXTENSIONS, ImageRecord
from ..images.transforms import Preprocess
from ..runs import folder as runs

BATCHES = (1, 32)


@dataclass
class Check:
    what: str  # what was timed, in words
    n: int
    onnx_ms: dict[int, float]  # batch -> ms per image
    predict_ms: dict[int, float]
    agree: int  # images whose label is the same
    max_diff: float  # max |score difference| over every image and class
    threads: int


def sample(images: str, pre: Preprocess, fast_decode: bool, n: int = 32) -> tuple[np.ndarray, str]:
    """Up to `n` images (a folder searched recursively, or one file) decoded and cropped as predict
    does, repeated to `n`; random pixels when `images` is empty."""
    if not images:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 3, pre.crop, pre.crop), dtype=np.uint8), f"{n} random-pixel images"
    from ..images.datasets import eval_images

    root = Path(images)
    if not root.exists():
        raise UserError(f"--images {images!r} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    ds = eval_images(Path(""), [ImageRecord(str(p), -1, 0, 0) for p in files[:4 * n]], pre, fast_decode)
    good = [x.numpy() for x, why in (ds[i] for i in range(len(ds))) if not why][:n]
    if not good:
        raise UserError(f"no readable images in {images!r} to time the export on")
    x = np.stack(good)
    k = len(x)
    return np.concatenate([x] * -(-n // k))[:n], f"{k} images from {images}" + (f", repeated to {n}" if k < n else "")


def predict_scorer(run_dir, spec: dict, weights: str = "", trust_pickle: bool = False) -> Callable:
    """uint8 batch (numpy) -> scores as predict computes them, on the CPU."""
    import torch

    from ..codes.encoder import Encoder
    from ..images.transforms import normalize
    from ..runs.scoring import backbone_for
    from .model import finetuned

    cpu = torch.device("cpu")
    if spec["kind"] == "head":
        head = runs.load_head(run_dir, spec, trust_pickle)
        pre = Preprocess.from_spec(spec)
        enc = Encoder(backbone_for(spec, weights), cpu, pre.mean, pre.std)

        def scores(x):
            codes = enc(torch.from_numpy(x)).numpy()
            if hasattr(head, "predict_proba"):
                return head.predict_proba(codes)
            d = head.decision_function(codes)
            return np.stack([-d, d], 1) if d.ndim == 1 else d
        return scores
    model = finetuned(run_dir, spec).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def scores(x):
        return model(normalize(torch.from_numpy(x), channels_last=True)).softmax(1).float().numpy()
    return scores


def timings(fns: dict[str, Callable], x: np.ndarray) -> dict[str, dict[int, float]]:
    """name -> batch -> ms per image: two untimed calls each, then the best of three passes over
    `x` (its first 8 images at batch 1), the functions taking turns so that a busy machine slows
    them alike."""
    for fn in fns.values():
        for b in BATCHES:
            fn(x[:b])
            fn(x[:b])
    best = {name: dict.fromkeys(BATCHES, float("inf")) for name in fns}
    for _ in range(3):
        for name, fn in fns.items():
            for b in BATCHES:
                xs = x if b > 1 else x[:8]
                t0 = time.perf_counter()
                for i in range(0, len(xs), b):
                    fn(xs[i:i + b])
                best[name][b] = min(best[name][b], 1000 * (time.perf_counter() - t0) / len(xs))
    return best


def session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("export needs onnxruntime to check the file: pip install 'cnncodes[export]'") from None
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check(path: Path, reference: Callable, x: np.ndarray, what: str) -> Check:
    """Time the file in onnxruntime and `reference` (predict's scorer) on `x`, and compare them."""
    import torch

    sess = session(path)

    def ort_scores(b):
        return sess.run(["scores"], {"image": b})[0]
    got, want = ort_scores(x), np.asarray(reference(x))
    agree = int((got.argmax(1) == want.argmax(1)).sum())
    diff = float(np.abs(got - want).max())
    ms = timings({"onnxruntime": ort_scores, "predict": reference}, x)
    return Check(what, len(x), ms["onnxruntime"], ms["predict"], agree, diff, torch.get_num_threads() or os.cpu_count())
