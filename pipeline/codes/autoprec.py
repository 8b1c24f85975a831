"""`--precision auto` by measurement: time fp32 and bf16 on a stage's own first batches and keep
the faster, when their outputs agree (core.precision holds the rule and remembers the decision).

`measure` is the clock for any pair of step functions (features and predict: the backbone over
batches from the real loader, decode included; finetune: a train step); `for_extraction` settles
the decision before the features fingerprint is made, which records the resolved precision.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ..core import precision as cache
from ..core import devices
from ..core.devices import BF16, undecided

if TYPE_CHECKING:
    from pathlib import Path

    from ..core.dist import Ranks
    from .extract import Extraction

BLOCK, ROUNDS = 2, 2  # timed batches per block, blocks per precision (interleaved; the best block kept)
BATCHES = 1 + BLOCK * ROUNDS * 2  # the first batch warms both precisions up and gives their agreement
clock = time.perf_counter  # what measure() times with (tests make bf16 faster or slower through it)


def measure(steps: dict[str, Callable], batches: Iterator, unit: str = "images") -> dict:
    """Time `steps` ({'fp32': f, BF16: g}, each batch -> output) on `batches` (an iterator of
    (input, item count)): both warm up on the first batch, whose outputs give the agreement (mean
    cosine of the rows), then blocks of BLOCK batches alternate, ROUNDS each, and the best block's
    rate counts (the least disturbed by other work). The rate includes waiting for the batch: what
    the stage's loop would see. Returns the decision as core.precision keeps it."""
    x, _ = next(batches)
    out = {p: np.atleast_2d(np.asarray(f(x), dtype=np.float64)) for p, f in steps.items()}
    a, b = (o.reshape(len(o), -1) for o in (out["fp32"], out[BF16]))
    cosine = float(np.mean((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                                         1e-12)))
    rate = dict.fromkeys(steps, 0.0)
    for _ in range(ROUNDS):
        for p, f in steps.items():
            t, n = clock(), 0
            for _ in range(BLOCK):
                x, k = next(batches)
                f(x)
                n += k
            rate[p] = max(rate[p], n / (clock() - t))
    choice, why = cache.choose(rate["fp32"], rate[BF16], cosine)
    return {"choice": choice, "why": why, "fp32_per_s": round(rate["fp32"], 2), "bf16_per_s": round(rate[BF16], 2),
            "unit": unit, "cosine": round(cosine, 5), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def settle(key: str, device_type: str, asked: str, run: Callable[[], dict], file=None) -> str:
    """--precision resolved, measuring with `run` (-> measure's decision) when auto has no
    decision for `key` on this processor yet; says the decision in one line when auto decides."""
    from ..core.devices import precision_for

    if undecided(device_type, asked, key):
        entry = run()
        cache.remember(key, entry)
        print(cache.describe(entry, True), file=file)
        return entry["choice"]
    remembered = cache.recalled(key) if asked == "auto" and device_type == "cpu" else None
    if remembered is not None and devices.cpu_bf16():  # (looked up at call time: tests pin it)
        print(cache.describe(remembered, False), file=file)
    return precision_for(device_type, asked, key)


def for_extraction(out: Path, job: Extraction, force: bool, ranks: Ranks) -> Extraction:
    """The job with --precision auto decided (rank 0 measures, the others read its decision).
    Undecided with a file already made from the same inputs in either precision: that file's
    precision, so a deleted decision never costs a measurement, nor a cache hit."""
    from ..core import dist

    key = job.precision_key
    if not undecided(job.device_type, job.precision, key):
        if ranks.main:
            settle(key, job.device_type, job.precision, dict)
        return job
    if out.exists() and not force:
        from .store import read_attrs

        try:
            made = read_attrs(out)
        except Exception:  # noqa: BLE001  - a damaged file is cache_hit's to report
            made = {}
        fixed = replace(job, precision="bf16" if made.get("precision") == BF16 else "fp32")
        if made.get("fingerprint") == fixed.fingerprint:
            return fixed
    if ranks.main:
        settle(key, job.device_type, job.precision, lambda: time_extraction(job))
    dist.barrier(ranks)
    return job


def time_extraction(job: Extraction) -> dict:
    """measure() on the backbone over the features loader's first BATCHES batches (decode
    included; the dataset's batches again from its start when it has fewer)."""
    from ..core.devices import resolve_device
    from .backbone import load_backbone
    from .encoder import Encoder
    from .extract import image_batches, plan_shards

    print(f"precision auto: timing fp32 and bf16 on {BATCHES} batches of {job.batch_size} (once on this processor, "
          "for this backbone and batch size)")
    device = resolve_device(job.device_type)
    plan = plan_shards(job.scan, job.batch_size, job.shard_size)
    flat = [b for p in plan.shards for b in p.batches] or [[]]
    order = [flat[i % len(flat)] for i in range(BATCHES)]
    from ..core import dist

    loader = image_batches(job, plan, order, device, dist.Ranks())
    enc = Encoder(load_backbone(job.backbone, job.weights), device, job.pre.mean, job.pre.std, job.compile)
    return measure(encoder_steps(enc), ((x, len(x)) for x, _ in loader))


def encoder_steps(enc) -> dict[str, Callable]:
    """The two precisions of one Encoder (it reads its precision at each call)."""
    def step(p: str):
        def run(x):
            enc.precision = p
            return enc(x).cpu().numpy()
        return run
    return {"fp32": step("fp32"), BF16: step(BF16)}
