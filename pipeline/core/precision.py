"""What `--precision auto` decided on this processor, remembered in a small JSON file.

A processor flag cannot say whether bf16 is faster: AVX512-BF16 without AMX (Cooper Lake Xeons,
AMD Zen 4 and 5) ran ResNet18's features at 0.64x fp32 and MobileNetV2's at 1.13x. So the first
time a backbone is used on such a processor, the stage times both precisions on its own first
batches (codes.autoprec) and the decision is kept here, per processor model, backbone, batch size,
job (features, a fine-tuning step) and torch version, with the rates it was made from. The file is
meant to be read and may be deleted at any time (the next run measures again).

Where: $CNNCODES_PRECISION_CACHE, else $XDG_CACHE_HOME/cnncodes/precision.json (~/.cache when
unset). Imports no torch: a features cache hit stays fast.
"""
from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path

from .files import write_json

CACHE_ENV = "CNNCODES_PRECISION_CACHE"
SPEEDUP = 1.05  # bf16 is kept only when at least this much faster: within 5%, fp32 (exact) is as good
AGREEMENT = 0.99  # ... and when its codes (outputs) agree with fp32's: mean cosine at least this


def cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnncodes" / "precision.json"


def processor() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), else what platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        name = ""
    return name or platform.processor() or platform.machine() or "unknown processor"


def decision_key(backbone: str, batch_size: int, job: str = "features") -> str:
    """What a decision holds for: processor model, backbone, batch size, job, torch version."""
    return f"{processor()} | {backbone} | batch {batch_size} | {job} | torch {version('torch')}"


def _read() -> dict:
    try:
        doc = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: measure again (and rewrite it)
    return doc if isinstance(doc, dict) else {}


def recalled(key: str) -> dict | None:
    """The decision remembered for `key`, or None."""
    entry = _read().get(key)
    return entry if isinstance(entry, dict) and entry.get("choice") in ("fp32", "bf16-autocast") else None


def remember(key: str, entry: dict) -> Path:
    """Add (or replace) one decision in the file; returns its path. A file that cannot be written
    costs a measurement next time, nothing else."""
    from filelock import FileLock, Timeout

    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock", timeout=30):  # two stages measuring at once each add their own
            write_json(path, {**_read(), key: entry})
    except (OSError, Timeout) as e:
        print(f"precision auto: could not remember the decision in {path} ({getattr(e, 'strerror', None) or e})")
    return path


def choose(fp32_rate: float, bf16_rate: float, cosine: float) -> tuple[str, str]:
    """(resolved precision, why in words) from measured rates (items/s) and the codes' agreement."""
    if cosine < AGREEMENT:
        return "fp32", f"bf16 outputs disagree with fp32's (cosine {cosine:.4f} < {AGREEMENT})"
    if bf16_rate >= SPEEDUP * fp32_rate:
        return "bf16-autocast", f"bf16 is {bf16_rate / fp32_rate:.2f}x fp32 (cosine {cosine:.4f})"
    return "fp32", f"bf16 is {bf16_rate / fp32_rate:.2f}x fp32, not {SPEEDUP:.2f}x or more"


def describe(entry: dict, measured_now: bool) -> str:
    """The one line a stage prints at start."""
    how = "measured now" if measured_now else "remembered"
    return (f"precision auto: {entry['choice']} ({entry['why']}; fp32 {entry['fp32_per_s']:.1f}, bf16 "
            f"{entry['bf16_per_s']:.1f} {entry.get('unit', 'images')}/s, {how} in {cache_path()}; delete it to "
            "measure again)")
