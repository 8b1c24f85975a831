"""Section precision: `features` in fp32 and in bf16 (autocast), each against its ceiling, the pure
model's images/s on already-decoded tensors at the same batch and precision on this machine; and
the bf16/fp32 ratios of both. Runs are interleaved (fp32, bf16, fp32, bf16...) and the best of
each is kept, so a busy moment of a shared machine counts against neither side."""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.codes.backbone import load_backbone
from pipeline.codes.encoder import Encoder
from pipeline.codes.store import read_codes
from pipeline.core.devices import precision_for, resolve_device

from .common import Setup, Shared, log, row
from .synthetic import warm_file_cache
from .timing import extract_ours

PRECISIONS = ("fp32", "bf16")
BATCH = 32  # the features stage's default batch
CEILING = 0.85  # the pipeline at this fraction of the pure model or better: decoding is out of the way


def pure_rate(enc: Encoder, crop: int, batches: int) -> float:
    """images/s of the Encoder alone (normalise, trunk, float32 codes) on random uint8 batches."""
    x = torch.randint(0, 256, (BATCH, 3, crop, crop), dtype=torch.uint8)
    for _ in range(2):  # oneDNN picks and caches its kernels on the first calls
        enc(x)
    t0 = time.perf_counter()
    for _ in range(batches):
        enc(x)
    if enc.cuda:
        torch.cuda.synchronize()
    return BATCH * batches / (time.perf_counter() - t0)


def mean_cosine(a_path, b_path) -> float:
    """Mean cosine between the codes of the same images in two features files."""
    a, b = read_codes(a_path), read_codes(b_path)
    x = np.concatenate([a.splits[k].codes for k in a.splits])
    y = np.concatenate([b.splits[k].codes for k in a.splits])
    return float(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)).mean())


def bench_precision(s: Setup, shared: Shared | None = None) -> list[dict]:
    """Pipeline and pure-model images/s per precision, interleaved, best of `repeats` rounds."""
    warm_file_cache(s.data)
    device = resolve_device(s.device)
    bb = load_backbone(s.backbone, s.weights, s.seed)
    resolved = {p: precision_for(device.type, p) for p in PRECISIONS}
    encoders = {p: Encoder(bb, device, precision=resolved[p]) for p in PRECISIONS}
    repeats = 1 if s.quick else 2
    pipe, pure, files = {p: 0.0 for p in PRECISIONS}, {p: 0.0 for p in PRECISIONS}, {}
    for r in range(repeats):
        for p in PRECISIONS:
            log(f"precision: {s.backbone} {p}, round {r + 1} of {repeats}: features, then the pure model")
            ours = extract_ours(s, s.data, f"precision-{p}", precision=p)
            pipe[p] = max(pipe[p], ours.loop_rate or 0.0)
            pure[p] = max(pure[p], pure_rate(encoders[p], s.crop, max(3, min(20, ours.images // BATCH))))
            files[p] = ours.path
    cos = mean_cosine(files["fp32"], files["bf16"])
    n = ours.images
    what = (f"{s.backbone} ({bb.weights_id}), batch {BATCH}, channels_last, {device}, {torch.get_num_threads()} "
            f"threads; best of {repeats} interleaved rounds")
    rows = [row(f"precision: {s.backbone} {p}, pipeline as a fraction of the pure model", pipe[p], pure[p],
                "images/s", "higher", CEILING,
                note=f"ours = features' own decode+forward loop on {n} images of {s.data.resolve().name} "
                     f"({resolved[p]}); reference = the Encoder alone on decoded {s.crop}px uint8 tensors, the "
                     f"ceiling on this machine; {what}") for p in PRECISIONS]
    target = 1.5 if s.backbone == "resnet18" and device.type == "cpu" else None
    return rows + [
        row(f"precision: {s.backbone} bf16 / fp32, pipeline", pipe["bf16"], pipe["fp32"], "images/s", "higher",
            target, note=f"features --precision bf16 vs fp32; mean cosine of the codes {cos:.4f}; {what}"),
        row(f"precision: {s.backbone} bf16 / fp32, pure model", pure["bf16"], pure["fp32"], "images/s", "higher",
            note=f"the Encoder alone, bf16 autocast vs fp32; {what}"),
    ]
