"""Section extraction: images/s of `features` against the tutorial's eval pass on DATA, and on a GPU
10,000 synthetic ImageNet-size JPEGs against the 15,000 images/s target."""
from __future__ import annotations

import numpy as np
import torch

from pipeline.core.devices import resolve_device

from .common import TARGETS, Setup, Shared, Target, log, row
from .synthetic import make_image_folder, warm_file_cache
from .timing import best_reference_extraction, extract_ours, ours_settings


def bench_extraction(s: Setup, shared: Shared | None = None) -> list[dict]:
    """Ours on DATA against the reference eval pass; leaves our extraction in `shared` for later sections."""
    warm_file_cache(s.data)
    log(f"extraction: ours (features) on {s.data}")
    ours = extract_ours(s, s.data, "data")
    if shared is not None:
        shared.ours = ours
    n_ref, ref_s, ref_how = best_reference_extraction(s, s.data)
    loop = f"; the stage's own decode+forward loop: {ours.loop_rate:.1f} images/s" if ours.loop_rate else ""
    rows = [
        row(
            f"extraction: {s.data.resolve().name} ({ours.images} images)",
            ours.images / ours.seconds,
            n_ref / ref_s,
            "images/s",
            "higher",
            note="wall time of the whole call (scan, model load, decode, forward, write) for both; "
            f"{ours_settings()}; {ref_how}{loop}",
        )
    ]
    return rows + bench_gpu_extraction(s)


def bench_gpu_extraction(s: Setup) -> list[dict]:
    """On a GPU: 10,000 synthetic ImageNet-size JPEGs, files -> HDF5, with --decode gpu (nvJPEG),
    with --decode gpu --compile and with --decode cpu (PIL workers), and the reference eval pass,
    in the same run."""
    name = f"extraction: {s.gpu_images:,} synthetic ImageNet-size JPEGs (GPU)"
    on_ours = Target(TARGETS["gpu_images_per_s"], of="ours")
    if not (torch.cuda.is_available() or s.force_gpu_section):
        log("extraction on synthetic ImageNet-size JPEGs: skipped (no CUDA GPU)")
        return [row(name, None, None, "images/s", "higher", on_ours,
                    note="not measured: no CUDA GPU on this machine; the 15,000 images/s target is for a GPU")]
    root = s.tmp / "synthetic-imagenet"
    log(f"generating {s.gpu_images:,} synthetic 500x375 JPEGs in {root}")
    make_image_folder(root, s.gpu_images, (500, 375), splits=(("train", 1.0),))
    kb = np.mean([p.stat().st_size for p in list(root.rglob("*.jpg"))[:500]]) / 1e3
    warm_file_cache(root)
    dev = resolve_device(s.device)
    batched = "gpu" if dev.type == "cuda" else "torchvision"  # tests run this section on a CPU
    gpu = extract_ours(s, root, "synthetic-gpu-decode", splits="train", decode=batched)
    comp = extract_ours(s, root, "synthetic-gpu-compiled", splits="train", decode=batched, compile=True)
    cpu = extract_ours(s, root, "synthetic-pil-decode", splits="train", decode="cpu")
    n_ref, ref_s, ref_how = best_reference_extraction(s, root, ("train",), limit=s.gpu_reference_images)
    files = f"500x375 JPEGs, {kb:.0f} KB on average; device {dev}"
    return [row(name + f", --decode {batched}", gpu.images / gpu.seconds, n_ref / ref_s, "images/s", "higher",
                on_ours, note=f"target is on ours (images/s); {files}; {ours_settings('gpu')}; {ref_how}, measured "
                              f"on {n_ref:,} of the files"),
            row(name + f", --decode {batched} --compile", comp.images / comp.seconds, n_ref / ref_s, "images/s",
                "higher", on_ours,
                note=f"torch.compile (CUDA graphs): {comp.compile_seconds:.1f}s of compiling, left out of the "
                     f"images/s and reported here; {files}; reference as in the row above"),
            row(name + ": GPU decode vs PIL decode", gpu.images / gpu.seconds, cpu.images / cpu.seconds, "images/s",
                "higher", 3.0, note=f"both ours, same files, same run: {ours_settings('gpu')} vs "
                                    f"{ours_settings('cpu')}")]
