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
    the device, before anything else, so 'cpu' (and 'auto' on a machine without the CUDA driver
    library, where torch cannot see a GPU either) is answered without importing torch (~1.5 s)."""
    import ctypes.util

    if name == "cpu" or (name == "auto" and ctypes.util.find_library("cuda") is None):
        return "cpu"
    return resolve_device(name).type


def precision_for(device_type: str) -> str:
    """The arithmetic the backbone runs in: bf16 autocast on a GPU, fp32 on CPU."""
    return "bf16-autocast" if device_type == "cuda" else "fp32"


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
