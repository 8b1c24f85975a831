"""Benchmarks: our stages against the PyTorch transfer-learning tutorial's way, same data, same run.

Usage (from the repository root):
  python -m bench [--quick] --data DIR --backbone NAME --weights W --out reports/benchmarks.json
What each section measures: bench/__init__.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from pipeline import UserError
from pipeline.codes.backbone import load_backbone
from pipeline.core.cli import Parser
from pipeline.core.devices import resolve_device
from pipeline.core.files import write_json
from pipeline.images.scan import scan

from .audit import bench_audit
from .common import TUTORIAL_EPOCHS, Setup, Shared, log
from .document import commit, machine, table, versions
from .export import bench_export
from .extraction import bench_extraction
from .finetune import bench_finetune
from .frozen import bench_frozen
from .heads import bench_heads
from .memory import bench_memory
from .precision import bench_precision
from .ranks import bench_ranks
from .streaming import bench_streaming

# section name -> function(setup, shared) -> result rows; run in this order
SECTIONS = {
    "extraction": bench_extraction,
    "precision": bench_precision,
    "frozen": bench_frozen,
    "finetune": bench_finetune,
    "memory": bench_memory,
    "heads": bench_heads,
    "streaming": bench_streaming,
    "ranks": bench_ranks,
    "audit": bench_audit,
    "export": bench_export,
}


def run_all(s: Setup, sections: tuple[str, ...] = tuple(SECTIONS)) -> dict:
    """Run the chosen sections in order; returns the benchmarks.json document."""
    t0 = time.perf_counter()
    results, shared, timing = [], Shared(), {}
    for name in sections:
        if name not in SECTIONS:
            raise UserError(f"unknown section {name!r} (choose from {', '.join(SECTIONS)})")
        t = time.perf_counter()
        results += SECTIONS[name](s, shared)
        timing[name] = round(time.perf_counter() - t, 1)
        log(f"{name}: done in {timing[name]:.0f}s")
    return {"machine": machine(), "commit": commit(), "versions": versions(), "quick": s.quick,
            "data": str(s.data), "backbone": s.backbone, "weights": s.weights, "device": str(resolve_device(s.device)),
            "epochs": s.epochs, "section_seconds": timing, "wall_seconds": round(time.perf_counter() - t0, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(prog="python -m bench", description=__doc__.strip().splitlines()[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="2 training epochs (25-epoch times projected); heads on 800x1280 and 10,000x512 synthetic codes "
        "instead of 3,500x1280 and 100,000x512",
    )
    p.add_argument(
        "--data", type=Path, default=Path("data/hymenoptera_data"), help="ImageFolder root with train/ and val/"
    )
    p.add_argument("--backbone", default="resnet18", help="torchvision classification model name")
    p.add_argument("--weights", default="DEFAULT", help="DEFAULT, none, or a state_dict path")
    p.add_argument("--out", type=Path, default=Path("reports/benchmarks.json"), help="results JSON")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where ours and the reference run")
    p.add_argument("--seed", type=int, default=0, help="seed for weights=none, CV folds, training order")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per run; None: 25, or 2 with --quick")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of the sections to run")
    return p.parse_args(argv)


def check(a: argparse.Namespace, sections: tuple[str, ...]) -> None:
    """Bad input fails here, before anything runs, as one UserError."""
    bad = [x for x in sections if x not in SECTIONS]
    if bad or not sections:
        raise UserError(f"unknown section(s) {bad or sections!r}: choose from {', '.join(SECTIONS)}")
    if a.epochs is not None and a.epochs < 1:
        raise UserError("--epochs must be >= 1")
    if a.out.is_dir():
        raise UserError(f"--out {str(a.out)!r} is a directory; give a .json file path")
    scan(a.data)  # a missing or malformed data folder fails here, in one line
    load_backbone(a.backbone, a.weights, a.seed)  # so do an unknown backbone and unusable weights
    resolve_device(a.device)


def setup(a: argparse.Namespace, tmp: Path) -> Setup:
    s = Setup(data=a.data, backbone=a.backbone, weights=a.weights, tmp=tmp, quick=a.quick, device=a.device,
              seed=a.seed, epochs=a.epochs or (2 if a.quick else TUTORIAL_EPOCHS))
    if a.quick:  # memory keeps 2,000 / 20,000: measured ~30 s for both on 2 cores
        s = replace(s, head_cases=((800, 200, 1280, 5, 0.07), (10_000, 2_000, 512, 10, 0.12)),
                    stream_counts=(20_000, 200_000), rank_images=200)
    return s


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sections = tuple(x for x in a.sections.split(",") if x)
    try:
        check(a, sections)
        with tempfile.TemporaryDirectory(prefix="cnncodes-bench-") as tmp:
            doc = run_all(setup(a, Path(tmp)), sections)
    except UserError as e:
        sys.stderr.write(f"bench: error: {e}\n")
        return 2
    write_json(a.out, doc)
    print()
    print(table(doc))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
