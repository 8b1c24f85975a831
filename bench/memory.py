"""Section memory: peak RSS of `features` must not grow with the number of images; the full run also
measures it with default settings (decoding workers) on real-size images, per process. `peak_rss`
(a stage in a fresh process, measured by bench.launcher) serves the streaming section too."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import ROOT, TARGETS, Setup, Shared, log, row
from .synthetic import make_image_folder

GROWTH = 1 / TARGETS["memory_growth"]  # the target on RSS(N) / RSS(10N)


def peak_rss(args: list[str], log_file: Path) -> tuple[dict, float]:
    """Run `python -m pipeline ARGS` in a fresh process; ({peak, main, worker,
    total} RSS in MB, wall seconds). `peak` is the kernel's ru_maxrss of the stage and its reaped
    children (the largest one); main, worker (the largest) and total (all at once) are sampled
    from /proc every 50 ms, so a spike shorter than that can be missed."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bench.launcher", sys.executable, "-m", "pipeline", *args]
    with open(log_file, "wb") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    lines = log_file.read_text(errors="replace").strip().splitlines()
    if p.returncode != 0 or not lines or not lines[-1].startswith("peak_rss_kib="):
        raise RuntimeError(f"`python -m pipeline {' '.join(args)}` failed ({p.returncode}): {lines[-2:]}")
    vals = dict(kv.split("=") for kv in lines[-1].split())
    mb = {k.removesuffix("_kib").replace("peak_rss", "peak"): int(v) / 1024 for k, v in vals.items()}
    return mb, time.perf_counter() - t0  # Linux: KiB


def bench_memory(s: Setup, shared: Shared | None = None) -> list[dict]:
    """`features` at N and 10N small synthetic images, one process (--workers 0)."""
    small, large = s.memory_counts
    rss, secs = {}, {}
    for n in (small, large):
        root = make_image_folder(s.tmp / f"memory-{n}", n, (48, 40), unique=64)
        log(f"memory: features on {n:,} synthetic 48x40 images in a fresh process")
        args = ["features", "--data", str(root), "--backbone", "resnet18", "--weights", "none", "--resize", "40",
                "--crop", "32", "--device", "cpu", "--workers", "0", "--out", str(s.tmp / f"memory-{n}.h5")]
        mb, secs[n] = peak_rss(args, s.tmp / f"memory-{n}.log")
        rss[n] = mb["peak"]
        shutil.rmtree(root)
    rows = [
        row(
            f"features peak RSS: {large:,} vs {small:,} images",
            rss[large],
            rss[small],
            "MB",
            "lower",
            GROWTH,
            note=f"reference column = the same stage at {small:,} images; met when RSS at {large:,} is within "
            f"10% of {small:,} (ratio >= 1/1.1); growth {rss[large] - rss[small]:+.1f} MB; resnet18 --weights none, "
            f"48x40 JPEGs, --resize 40 --crop 32, CPU, --workers 0 (one process holds everything); "
            f"{secs[small]:.0f}s and {secs[large]:.0f}s",
        )
    ]
    return rows + ([] if s.quick else bench_memory_real(s))


def bench_memory_real(s: Setup) -> list[dict]:
    """Peak RSS per process of `features` with default settings (decoding workers) on real-size
    images (341x256 JPEGs, like photos grown to shorter side 256) and the DATA backbone."""
    small, large = s.memory_counts
    got = {}
    for n, workers in ((small, None), (large, None), (small, "0")):
        root = s.tmp / f"memory-real-{n}"
        if not root.exists():
            make_image_folder(root, n, (341, 256), unique=500)
        log(f"memory: features on {n:,} synthetic 341x256 JPEGs, {s.backbone}, workers {workers or 'default'}")
        args = ["features", "--data", str(root), "--backbone", s.backbone, "--weights", s.weights, "--device",
                s.device, "--out", str(s.tmp / f"memory-real-{n}-{workers}.h5"), *(["--workers", workers] if workers
                                                                                   else [])]
        got[n, workers], _ = peak_rss(args, s.tmp / f"memory-real-{n}.log")
    for n in (small, large):
        shutil.rmtree(s.tmp / f"memory-real-{n}", ignore_errors=True)
    a, b, z = got[small, None], got[large, None], got[small, "0"]
    return [
        row(f"features peak RSS, real-size images: {large:,} vs {small:,} (default settings)", b["total"], a["total"],
            "MB", "lower", GROWTH,
            note=f"all processes at once; main {a['main']:.0f} / {b['main']:.0f} MB, largest worker "
                 f"{a['worker']:.0f} / {b['worker']:.0f} MB at {small:,} / {large:,} images; {s.backbone}, "
                 "341x256 JPEGs, default --workers; sampled every 50 ms"),
        row(f"features peak RSS, real-size images: default workers vs --workers 0 + the workers' own "
            f"({large:,} images)", b["total"], z["main"] + b["worker"] * (b["total"] > b["main"]), "MB",
            "lower", GROWTH,
            note=f"--workers 0 at {small:,} images: {z['main']:.0f} MB in one process; reference column = that "
                 "plus the largest worker's own RSS (one worker on 2 cores)"),
    ]
