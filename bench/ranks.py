"""Section ranks: `features` on 2 torchrun ranks against 1 process, same synthetic images (CPU)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from .common import ROOT, Setup, Shared, log, row
from .synthetic import make_image_folder, warm_file_cache

TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pipeline"]


def bench_ranks(s: Setup, shared: Shared | None = None) -> list[dict]:
    """Wall time of each, process start and model loads included."""
    n = s.rank_images
    root = make_image_folder(s.tmp / "ranks-images", n, (320, 240))
    warm_file_cache(root)
    common = ["features", "--data", str(root), "--backbone", s.backbone, "--weights", s.weights, "--device", "cpu"]
    secs = {}
    for k, cmd in (("1", [sys.executable, "-m", "pipeline"]), ("2", TORCHRUN_2)):
        log(f"ranks: features on {n:,} synthetic 320x240 JPEGs, {k} process(es)")
        t0 = time.perf_counter()
        r = subprocess.run([*cmd, *common, "--out", str(s.tmp / f"ranks-{k}.h5")], cwd=ROOT, capture_output=True,
                           text=True)
        secs[k] = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"features with {k} process(es) failed: {r.stderr[-500:]}")
    shutil.rmtree(root)
    return [row(f"features wall time: torchrun 2 ranks vs 1 process ({n:,} images, CPU)", secs["2"], secs["1"], "s",
                "lower", note=f"{os.cpu_count()} cores: the ranks share them (torch threads and decoding workers "
                              "split between ranks); includes process start and the model load of each rank")]
