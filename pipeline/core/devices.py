"""Where a stage computes: the device, its arithmetic, worker processes and the heap.

torch is imported only inside the functions that need it, so a cache hit on a CPU stays fast.
"""
from __future__ import annotations

from .. import UserError


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(name)


def device_type(name: str) -> str:
    """'cpu' or 'cuda' for a --device value. A cache hit needs the precision, which follows from
    the device (and --precision), before anything else, so 'cpu' (and 'auto' on a machine without the CUDA driver
    library, where torch cannot see a GPU either) is answered without importing torch (~1.5 s)."""
    import ctypes.util

    if name == "cpu" or (name == "auto" and ctypes.util.find_library("cuda") is None):
        return "cpu"
    return resolve_device(name).type


PRECISIONS = ("auto", "fp32", "bf16")  # the --precision flag
BF16 = "bf16-autocast"  # a resolved precision, as recorded (fingerprints, run records); the other is "fp32"
PRECISION_HELP = ("the backbone's arithmetic: bf16 (autocast; weights and stored codes stay float32) or fp32; auto: "
                  "bf16 on a GPU; on a processor with native bf16 (AVX512-BF16 or AMX) the faster of the two, timed "
                  "on this stage's first batches the first time and remembered (core/precision.py), fp32 elsewhere")


def cpu_bf16() -> bool:
    """Whether this processor runs bf16 natively: oneDNN says it supports bf16 and, on x86, the
    processor has AVX512-BF16 or AMX-BF16. oneDNN also "supports" bf16 on any AVX512 processor by
    converting in software, where it is slower than fp32, so there the flags decide. On Linux x86
    the flags are read from /proc/cpuinfo (no torch: a cache hit stays fast); elsewhere torch's
    oneDNN check answers."""
    import platform

    if platform.system() == "Linux" and platform.machine() in ("x86_64", "AMD64"):
        try:
            with open("/proc/cpuinfo") as fh:
                flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
        except OSError:
            flags = None
        if flags is not None:
            return "avx512_bf16" in flags or "amx_bf16" in flags
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision_for(device_type: str, asked: str = "auto", key: str = "") -> str:
    """--precision resolved for a device type: fp32, or BF16 (bf16 autocast; weights, optimizer
    state and the codes stored stay float32). auto: bf16 on a GPU; on a processor that runs bf16
    natively (cpu_bf16), the decision remembered for `key` (core.precision: measured by
    codes.autoprec, since native bf16 is not always faster), fp32 while none is; fp32 elsewhere.
    bf16 is honoured anywhere (emulated where not native)."""
    if asked not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)} (got {asked!r})")
    if asked == "auto":
        if device_type == "cuda":
            return BF16
        if device_type == "cpu" and key and cpu_bf16():
            from .precision import recalled

            return (recalled(key) or {}).get("choice", "fp32")
        return "fp32"
    return BF16 if asked == "bf16" else "fp32"


def undecided(device_type: str, asked: str, key: str) -> bool:
    """Whether --precision auto has to be measured here before it resolves (precision_for)."""
    from .precision import recalled

    return asked == "auto" and device_type == "cpu" and cpu_bf16() and recalled(key) is None


def resolve_workers(n: int, share: int = 1) -> int:
    """--workers: -1 (automatic) is one per spare core, at most 8, of the cores this process gets
    when `share` processes split the machine (torchrun ranks)."""
    import os

    return min(8, max((os.cpu_count() or 1) // share - 1, 0)) if n < 0 else n


def trim_heap() -> bool:
    """Give the heap's free memory back to the system (glibc malloc_trim; elsewhere nothing).

    The main process of `features` grew by ~0.45 MB per image while it received batches from its
    decoding workers (0.94 -> 2.8 GB over 3,980 photos): glibc raises its mmap threshold after the
    first large free, so each batch's big float tensors and activations then come from the heap,
    which fragments and is not returned. Trimming once per shard (16 batches) bounds it (2.8 ->
    1.3 GB) at no measurable cost; trimming every batch, or keeping big buffers out of the heap
    with mallopt, bounds it further but makes extraction up to a third slower (page faults)."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False
