"""One harness for what a method costs to use on a new image: the same warm, batched measurement
for every method, so that two runs of the same model show the same cost up to the spread printed
beside it, and a head on codes is timed as a fine-tuned network is.

What it measures: the model's pass on one batch of BATCH already-decoded crops (a seeded random
uint8 batch at the run's crop size: the decode and resize of a photo are left out, as they are the
same for every method), called WARMUP times untimed (first-call allocation, oneDNN kernel choice,
CUDA graphs), then REPEATS times timed; the cost is the median call's milliseconds divided by the
batch, with the fastest and slowest calls kept as the spread. `fn` must finish its work before it
returns (the callers copy the result to the host, which waits for a GPU).

`CNNCODES_COST=quick` in the environment (the test suite sets it) times one call of 4 images
without warm-up: the same code path in a fraction of the time, its figure not one to quote.

Written by hand rather than with `timeit` or torch.utils.benchmark: the harness must also time the
scikit-learn heads in classify, which imports no torch, and `timeit` keeps only totals.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable

BATCH = 32  # images per timed call: predict's default --batch-size
WARMUP = 2
REPEATS = 5
WHAT = "the model's pass on a warm batch of decoded crops, median call per image; decoding and resizing excluded"


def plan() -> tuple[int, int, int]:
    """(batch, warm-up calls, timed calls): BATCH, WARMUP, REPEATS, or the quick plan (module docstring)."""
    return (4, 0, 1) if os.environ.get("CNNCODES_COST") == "quick" else (BATCH, WARMUP, REPEATS)


def measure(fn: Callable[[], object], batch: int, repeats: int = REPEATS, warmup: int = WARMUP, **about) -> dict:
    """{"ms_per_image": median call / batch, "low"/"high": fastest/slowest call / batch, "batch",
    "repeats", "threads", "what", and `about` (device, precision...)} of `fn`, which does the work
    of one batch of `batch` images (the callers take batch, warmup and repeats from `plan()`)."""
    for _ in range(warmup):
        fn()
    calls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        calls.append(time.perf_counter() - t0)
    per = [1000 * c / batch for c in calls]
    return {"ms_per_image": statistics.median(per), "low": min(per), "high": max(per), "batch": batch,
            "repeats": repeats, "threads": threads(), "what": WHAT, **about}


def threads() -> int:
    """The threads a CPU pass may use (torch's, when torch is already imported; else the cores)."""
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else (os.cpu_count() or 1)
