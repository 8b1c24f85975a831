"""The exported file against predict's own computation on the same images: CPU milliseconds per
image (model only: the images are decoded and cropped once, before the clock; warm: after two
untimed calls; best of three passes) at batch 1 and 32, and how far apart the scores are.

predict's side is what stages/predict.py runs per batch: runs.scoring's scorer, the one predict
runs, at fp32: the BN-folded channels_last Encoder
and the scikit-learn head for a head on codes, the checkpoint's classifier and a softmax for a
fine-tune; with the --reject rule, its score too (heads.reject), and the decisions are compared:
an image is "unknown" on both sides or on neither.
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
    reject_agree: int | None = None  # images both sides call unknown, or both known (None: no rule)
    unknown: int = 0  # images predict --reject calls unknown
    distance_diff: float = 0.0  # max |rule score difference|
    borderline: int = 0  # disagreements within 1e-4 of the threshold (float rounding, not a wrong rule)


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


def predict_scorer(run_dir, spec: dict, weights: str = "", trust_pickle: bool = False,
                   reject: bool = False) -> Callable:
    """uint8 batch (numpy) -> (scores, the --reject rule's score or None) as `predict [--reject]`
    computes them (runs.scoring, predict's own scorer), on the CPU in fp32."""
    import torch

    from ..runs.scoring import Source, scorer_for

    fn, _, _ = scorer_for(Source(Path(run_dir), weights, trust_pickle, reject, "fp32"), spec, torch.device("cpu"))

    def scores(x):
        s, far = fn(torch.from_numpy(x))
        return np.asarray(s), None if far is None else np.asarray(far)
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


def check(path: Path, reference: Callable, x: np.ndarray, what: str, threshold: float | None = None) -> Check:
    """Time the file in onnxruntime and `reference` (predict's scorer) on `x`, and compare them:
    scores, labels and, with the rule's `threshold`, the rule's score and its unknown decisions."""
    import torch

    sess = session(path)
    names = ["scores"] + (["distance"] if threshold is not None else [])

    def ort_scores(b):
        return sess.run(names, {"image": b})
    got, (want, want_far) = ort_scores(x), reference(x)
    agree = int((got[0].argmax(1) == want.argmax(1)).sum())
    diff = float(np.abs(got[0] - want).max())
    ms = timings({"onnxruntime": ort_scores, "predict": reference}, x)
    c = Check(what, len(x), ms["onnxruntime"], ms["predict"], agree, diff, torch.get_num_threads() or os.cpu_count())
    if threshold is not None and want_far is not None:
        mine, theirs = got[1] > threshold, want_far > threshold
        c.reject_agree, c.unknown = int((mine == theirs).sum()), int(theirs.sum())
        c.distance_diff = float(np.abs(got[1] - want_far).max())
        c.borderline = int(((mine != theirs) & (np.abs(want_far - threshold) <= 1e-4)).sum())
    return c
