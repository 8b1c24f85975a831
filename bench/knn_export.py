"""What a k-NN head costs in an exported file, for choosing export.model.CODES_MAX (docs/export.md).

Usage: python -m bench.knn_export [N ...]   (default 10000 50000 100000)

A resnet18 trunk (random weights, 224 px: the cost of any real one) and a k-NN head (k = 5) on N
synthetic L2-normalised 512-d codes of 10 overlapping classes are exported as `export` does
(onnx_file.write_onnx); the same trunk with a linear head is the reference. Printed: the file's
size and onnxruntime's ms per image (1 thread, batch 1 and 32, warm, best of 3 passes, the files
taking turns so that other load slows them alike), as ratios to the reference. Then the vote with
the stored codes in float16 against float32 on 5,000 query codes: identical labels and the largest
probability difference (why the file keeps float32). Not a bench section: it only sizes a cap.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D, C, K = 512, 10, 5


def synthetic(rng, means: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, C, n)
    f = np.maximum(means[y] + rng.normal(0, 1, (n, D)), 0).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True), y


def exported(trunk, head, path: Path):
    """The session of trunk + head written as export writes it."""
    import onnxruntime as ort

    from pipeline.export import onnx_file
    from pipeline.export.model import Built, Exported, Normalise
    from pipeline.images.transforms import Preprocess

    pre = Preprocess(256, 224, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bench")
    module = Exported(Normalise(pre.mean, pre.std), trunk, head).eval().requires_grad_(False)
    onnx_file.write_onnx(Built(module, "probability", [str(c) for c in range(C)], pre, True, "bench"), path,
                         {"input": "bench"})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def timed(sessions: dict, x: np.ndarray) -> dict:
    best = {n: {1: float("inf"), 32: float("inf")} for n in sessions}
    for s in sessions.values():
        s.run(["scores"], {"image": x[:1]})
    for _ in range(3):
        for n, s in sessions.items():
            for b in (1, 32):
                xs = x[:8] if b == 1 else x
                t0 = time.perf_counter()
                for i in range(0, len(xs), b):
                    s.run(["scores"], {"image": xs[i:i + b]})
                best[n][b] = min(best[n][b], 1000 * (time.perf_counter() - t0) / len(xs))
    return best


def half_precision_votes(rng, means: np.ndarray, n: int) -> str:
    F, y = synthetic(rng, means, n)
    Q, _ = synthetic(rng, means, 5000)

    def vote(S):
        near = np.argsort(-(Q @ S.T - 0.5 * (S.astype(np.float64) ** 2).sum(1)), axis=1, kind="stable")[:, :K]
        return np.stack([(y[near] == c).sum(1) for c in range(C)], 1) / K
    p32, p16 = vote(F), vote(F.astype(np.float16).astype(np.float32))
    return (f"float16 references, {n:,} codes: {(p32.argmax(1) == p16.argmax(1)).mean():.2%} identical labels, "
            f"{(np.abs(p32 - p16).max(1) > 0).mean():.2%} of images with a vote changed, max |probability "
            f"difference| {np.abs(p32 - p16).max():.2f}")


def main(sizes: list[int]) -> None:
    import torch
    from torch import nn

    from pipeline.codes.backbone import fold_batchnorm, load_backbone
    from pipeline.export.model import KnnVote, Link

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    means = rng.normal(0, 0.3, (C, D))
    trunk = fold_batchnorm(load_backbone("resnet18", "none").trunk)[0].eval()
    tmp, sessions = Path(tempfile.mkdtemp()), {}
    for n in [0, *sizes]:
        head = KnnVote(*synthetic(rng, means, n), K, C) if n else nn.Sequential(nn.Linear(D, C), Link("softmax"))
        sessions[n] = exported(trunk, head.requires_grad_(False), tmp / f"{n}.onnx")
    ms = timed(sessions, rng.integers(0, 256, (32, 3, 224, 224), dtype=np.uint8))
    for n in sessions:
        mb = (tmp / f"{n}.onnx").stat().st_size / 1e6
        print(f"{'linear head' if not n else f'k-NN, {n:,} codes':>20}: {mb:6.1f} MB; ms/image batch 1 "
              f"{ms[n][1]:6.1f} (x{ms[n][1] / ms[0][1]:.2f}), batch 32 {ms[n][32]:6.1f} (x{ms[n][32] / ms[0][32]:.2f})")
    for n in sizes[:2]:
        print(half_precision_votes(rng, means, n))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 50_000, 100_000])
