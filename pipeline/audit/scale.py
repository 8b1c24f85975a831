"""The audit at scale, for bench: synthetic codes (codes/synthetic.py, overlapping ReLU'd
Gaussian classes) written to a features file, then the audit as the stage runs it (read, label
model, neighbour search, files), in a fresh Python process so that its peak resident memory is the
audit's own, not whatever the caller held before.

    from pipeline.audit.scale import synthetic_scale_check
    synthetic_scale_check(100_000, 512)  # {'seconds': ..., 'peak_rss_mib': ..., ...}

or `python -m pipeline.audit.scale N D [EXACT_MAX]` (prints the same dict as JSON; the neighbour
search is exact up to EXACT_MAX codes, codes.index).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..codes.index import EXACT_MAX


def synthetic_scale_check(n: int = 100_000, d: int = 512, classes: int = 10, c: float = 0.0, seed: int = 0,
                          exact_max: int = EXACT_MAX) -> dict:
    """Time and peak memory of the audit of n synthetic d-dimensional codes (80% train, 20% val):
    the file is written here, the audit measured in a child process; `c` as the stage's --c
    (0: chosen by CV), `exact_max` as its --exact-max (the neighbour search is exact up to it)."""
    from ..codes.synthetic import write_synthetic_codes

    with tempfile.TemporaryDirectory() as tmp:
        f = write_synthetic_codes(Path(tmp) / "codes.h5", n_train=n - n // 5, n_val=n // 5, dim=d, overlap=True,
                                  sep=0.35, classes=tuple(f"c{i}" for i in range(classes)), seed=seed,
                                  list_files=False)
        code = f"from pipeline.audit.scale import _measure; _measure({str(f)!r}, {c}, {seed}, {exact_max})"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"the scale check failed: {r.stderr.strip().splitlines()[-1:]}")
    return {"n": n, "d": d, "classes": classes, "codes_mib": n * d * 4 / (1 << 20),
            **json.loads(r.stdout.strip().splitlines()[-1])}


def _peak_mib() -> float:
    """This process's peak resident memory: VmHWM on Linux (reset by exec, unlike ru_maxrss, which
    would report the parent's peak for a child started by fork and exec), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _measure(features: str, c: float, seed: int, exact_max: int = EXACT_MAX) -> None:
    """The audit of one file as the stage runs it, into a folder beside it; its numbers as JSON."""
    from ..codes.store import read_codes
    from .findings import Spec, audit_splits, counts, write_audit

    before = _peak_mib()
    t0 = time.perf_counter()
    codes = read_codes(features)
    read_s = time.perf_counter() - t0
    a = audit_splits(codes.splits, codes.classes, Spec(c=c, seed=seed, exact_max=exact_max))
    t1 = time.perf_counter()
    write_audit(a, Path(features).parent / "audit", features)
    use = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": use.ru_utime + use.ru_stime,
                      "parts": {"read": read_s, **a.seconds, "write": time.perf_counter() - t1},
                      "peak_rss_mib": _peak_mib(), "rss_at_start_mib": before, "C": a.rules["label_model"]["C"],
                      "threshold": a.threshold, "counts": counts(a), "C_how": a.rules["label_model"]["C_how"],
                      "index": a.rules["neighbour_index"]}))


def index_recall(n: int = 100_000, d: int = 512, leaks: int = 1000, seed: int = 0) -> dict:
    """The audit of n synthetic codes with `leaks` val codes planted in train as near-copies (each
    moved by 10-30% of its centred length in a random direction, then the ReLU), through the exact
    search and through the index (codes.index): the share of the pairs exact search flags that the
    index flags too, and the planted leaks each finds (C fixed at 0.001, CV's choice on these codes)."""
    from ..codes.store import SplitCodes, read_codes
    from ..codes.synthetic import write_synthetic_codes
    from .findings import Spec, audit_splits

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        f = write_synthetic_codes(Path(tmp) / "codes.h5", n_train=n - n // 5 - leaks, n_val=n // 5, dim=d,
                                  overlap=True, sep=0.35, classes=tuple(f"c{i}" for i in range(10)), seed=seed)
        codes = read_codes(f)
    tr, va = codes.splits["train"], codes.splits["val"]
    src = rng.choice(len(va.labels), leaks, replace=False)
    u = rng.normal(size=(leaks, d))
    u *= (rng.uniform(0.1, 0.3, (leaks, 1)) * np.linalg.norm(va.codes[src] - tr.codes.mean(0), axis=1, keepdims=True)
          / np.linalg.norm(u, axis=1, keepdims=True))
    copies = np.maximum(va.codes[src] + u, 0).astype(np.float32)
    paths = [f"train/leak/{i}.jpg" for i in range(leaks)]
    splits = {"train": SplitCodes(np.concatenate([tr.codes, copies]), np.concatenate([tr.labels, va.labels[src]]),
                                  tr.paths + paths, []), "val": va}
    out, truth = {}, {(va.paths[i], p) for i, p in zip(src, paths)}
    for name, exact_max in (("exact", n), ("index", 0)):
        t0 = time.perf_counter()
        a = audit_splits(splits, codes.classes, Spec(seed=seed, exact_max=exact_max, c=0.001))
        pairs = {(p, o) for p, _, o, _, _ in a.pair_rows()}
        out[name] = {"seconds": time.perf_counter() - t0, "neighbours_s": a.seconds["neighbours"], "pairs": pairs,
                     "leaks_found": len(pairs & truth), "threshold": a.threshold, "index": a.rules["neighbour_index"]}
    found = len(out["exact"]["pairs"] & out["index"]["pairs"])
    for v in out.values():
        v["pairs"] = len(v["pairs"])
    return {"n": n, "d": d, "leaks": leaks, "pairs_recall": found / max(out["exact"]["pairs"], 1), **out}


if __name__ == "__main__":
    n, d, *more = (int(a) for a in sys.argv[1:4])
    print(json.dumps(synthetic_scale_check(n, d, exact_max=more[0] if more else EXACT_MAX), indent=1))
