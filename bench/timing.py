"""Ours and the reference (the tutorial's way), timed: extraction, training runs, and the probe for
the reference's fastest DataLoader worker count."""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import torch

from pipeline.codes.backbone import load_backbone
from pipeline.codes.store import read_codes
from pipeline.core.devices import resolve_device, resolve_workers
from pipeline.core.files import read_json
from pipeline.finetune import reference
from pipeline.images.scan import scan
from pipeline.images.transforms import Preprocess
from pipeline.stages import finetune
from pipeline.stages.features import Config as FeaturesConfig, extract

from .common import Extraction, Setup, log


def extract_ours(s: Setup, data: Path, tag: str, splits: str = "train,val", decode: str = "auto",
                 compile: bool = False, precision: str = "auto") -> Extraction:
    """`features` into a fresh file (never a cache hit), default settings otherwise."""
    out = s.tmp / f"features-{tag}-{time.monotonic_ns()}" / "codes.h5"
    cfg = FeaturesConfig(data=data, backbone=s.backbone, weights=s.weights, out=str(out), splits=splits,
                         resize=s.resize, crop=s.crop, device=s.device, seed=s.seed, decode=decode, compile=compile,
                         precision=precision)
    settle_precision(cfg)
    t0 = time.perf_counter()
    path = extract(cfg)
    secs = time.perf_counter() - t0
    c = read_codes(path)
    n = sum(len(sp.labels) for sp in c.splits.values())  # images with codes; skipped files do not count
    # compiling is recorded apart and left out of the wall time: rows say what it cost
    return Extraction(path, n, secs - c.header.compile_seconds, c.header.images_per_second,
                      c.header.compile_seconds)


def settle_precision(cfg: FeaturesConfig) -> None:
    """--precision auto's one-time measurement on this processor (codes.autoprec), made before the
    clock starts: a user pays it once per backbone and batch size, not per run."""
    from pipeline.codes.autoprec import for_extraction
    from pipeline.core import dist
    from pipeline.core.cli import parse_splits
    from pipeline.stages.features import job_for

    for_extraction(cfg.out_path, job_for(cfg, scan(cfg.data, parse_splits(cfg.splits))), True, dist.Ranks())


def ours_settings(decode: str = "cpu") -> str:
    """What our extraction used, for the rows' notes."""
    how = "nvJPEG batches on the GPU" if decode == "gpu" else f"PIL in {resolve_workers(-1)} worker process(es)"
    return (f"ours: batch 32, decode {how}, channels_last, BN folded, --precision auto (bf16 on a GPU; on a CPU "
            "with native bf16 the faster of fp32 and bf16, measured once before the clock starts)")


def worker_counts() -> list[int]:
    """The reference's DataLoader worker counts to try: 0, 1 and 4, where the cores allow."""
    return [w for w in (0, 1, 4) if w == 0 or w < (os.cpu_count() or 1)]


def extract_reference(
    s: Setup, data: Path, splits: tuple[str, ...] = ("train", "val"), limit: int | None = None, workers: int = 0
) -> tuple[int, float]:
    """The tutorial's eval pass: ImageFolder-style PIL load, Resize/CenterCrop/ToTensor/Normalize per
    image, DataLoader batch 16, `workers` workers, fp32, model in eval, default memory format.
    Returns (images, wall seconds incl. model load)."""
    records = [r for sp in scan(data, splits).splits.values() for r in sp.items][:limit]
    device = resolve_device(s.device)
    t0 = time.perf_counter()
    model = load_backbone(s.backbone, s.weights, s.seed).trunk.to(device).eval()
    tf = reference.reference_transforms(Preprocess(s.resize, s.crop))[1]
    loader = torch.utils.data.DataLoader(reference.image_folder(data, records, tf), batch_size=16,
                                         num_workers=workers)
    return reference.eval_pass(model, loader, device), time.perf_counter() - t0


def best_reference_extraction(s: Setup, data: Path, splits: tuple[str, ...] = ("train", "val"),
                              limit: int | None = None) -> tuple[int, float, str]:
    """The reference eval pass at each worker count; (images, seconds of the fastest, what was tried)."""
    tried = {}
    for w in worker_counts():
        log(f"extraction: reference eval pass, num_workers={w}")
        tried[w] = extract_reference(s, data, splits, limit, workers=w)
    best = min(tried, key=lambda w: tried[w][1])
    said = ", ".join(f"{w}: {n / t:.1f}" for w, (n, t) in tried.items())
    return *tried[best], (f"reference: batch 16, num_workers={best}, the fastest of {list(tried)} on this machine "
                          f"(images/s {said}), fp32, no channels_last")


def train_run(s: Setup, mode: str, loop: str, tag: str, epochs: int | None = None, **kw) -> tuple[dict, list[dict]]:
    """finetune.train with the tutorial's recipe (kw: workers, compile, ...).
    Returns (metrics.json document, history)."""
    cfg = finetune.Config(data=s.data, backbone=s.backbone, weights=s.weights, mode=mode, loop=loop,
                          epochs=epochs or s.epochs, batch_size=16, resize=s.resize, crop=s.crop, device=s.device,
                          seed=s.seed, out=s.tmp / f"runs-{tag}", **kw)
    run_dir, doc = finetune.train(cfg)
    return doc, read_json(run_dir / "history.json")


@functools.cache  # probed once per run and mode
def reference_workers(s: Setup, mode: str) -> tuple[int, str]:
    """The tutorial loop's fastest DataLoader worker count for `mode` on this machine, from one
    training epoch at each of worker_counts() (the tutorial itself uses 4); (count, what was tried)."""
    tried = {}
    for w in worker_counts():
        log(f"reference loop, {mode}: one epoch with num_workers={w}")
        history = train_run(s, mode, "reference", f"workers-{mode}-{w}", epochs=1, workers=w)[1]
        tried[w] = history[0]["train_seconds"]
    best = min(tried, key=tried.get)
    said = ", ".join(f"{w}: {t:.1f}s" for w, t in tried.items())
    return best, f"num_workers={best}, the fastest of {list(tried)} (one epoch's train time {said})"
