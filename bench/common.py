"""What every section shares: the run's Setup, the targets, and result rows (the ratio and target
logic lives here, once)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.runs.metrics import mean_epoch_seconds

ROOT = Path(__file__).resolve().parents[1]  # the repository root: where `python -m pipeline` runs
TUTORIAL_EPOCHS = 25  # the recipe's length: what "25 epochs" targets refer to
TARGETS = {  # ratio targets unless said otherwise
    "gpu_images_per_s": 15_000,  # on ours (images/s), not a ratio
    "frozen_speedup": 30.0,  # issue 31: 20x before --precision auto measured and CV ran in process
    "finetune_cpu_per_epoch": 1.5,
    "finetune_gpu_25_epochs": 10.0,
    "memory_growth": 1.10,  # peak RSS at 10N within 10% of N: ratio (RSS_N / RSS_10N) >= 1/1.10
}


@dataclass(frozen=True)
class Setup:
    """What every section needs; `quick` and the sizes below decide how long it takes."""

    data: Path
    backbone: str
    weights: str
    tmp: Path  # a TemporaryDirectory: features files, runs, synthetic images
    quick: bool = False
    device: str = "auto"
    seed: int = 0
    epochs: int = TUTORIAL_EPOCHS  # per training run (quick: 2)
    resize: int = 256  # the eval/val transform of ours and the reference alike
    crop: int = 224
    memory_counts: tuple[int, int] = (2_000, 20_000)
    # heads: (train, val, dim, classes, class separation) of synthetic codes; separations give a
    # linear head ~70-75% val accuracy, as real codes of a hard 5-class photo set do
    head_cases: tuple = ((3_500, 900, 1280, 5, 0.07), (100_000, 10_000, 512, 10, 0.12))
    head_image_size: tuple[int, int] = (320, 240)  # the images whose extraction the heads are timed against
    gpu_images: int = 10_000  # synthetic ImageNet-size JPEGs for the GPU extraction target
    gpu_reference_images: int = 1_000  # the reference eval pass runs on this many of them
    force_gpu_section: bool = False  # tests: run the synthetic-JPEG section on CPU too
    stream_counts: tuple[int, int] = (100_000, 1_000_000)  # codes for the sgd head's memory (quick: 20k / 200k)
    rank_images: int = 1_000  # synthetic images for torchrun 2 ranks vs 1 process (quick: 200)


@dataclass
class Extraction:
    """Our features run on DATA, shared by the extraction, frozen and heads sections."""

    path: Path
    images: int
    seconds: float  # wall time of extract(): scan, model load, decode, forward, HDF5 write (not compiling)
    loop_rate: float | None  # the stage's own images/s (decode + forward loop only)
    compile_seconds: float = 0.0  # features --compile: recorded apart


@dataclass
class Shared:
    """What one section leaves to later ones in the same run."""

    ours: Extraction | None = None  # set by the extraction section, reused by frozen and heads


@dataclass(frozen=True)
class Target:
    """A row's target: on the ratio (default) or on `ours`, and conditions that must hold too
    (None = not measured, ignored)."""

    value: float
    of: str = "ratio"
    conditions: tuple = ()


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


def ratio_of(ours, reference, better: str | None) -> float | None:
    """> 1 means we are faster/better: ours/reference when higher is better, reference/ours when lower is."""
    if better is None or ours is None or reference is None:
        return None
    num, den = (ours, reference) if better == "higher" else (reference, ours)
    return float(num) / float(den) if den else None


def judge(value, target, *conditions) -> bool | None:
    """value >= target and every condition that was measured (None = not measured, ignored).
    None when there is no target or no value to judge."""
    if target is None or value is None:
        return None
    return bool(value >= target and all(c for c in conditions if c is not None))


def row(name: str, ours, reference, unit: str, better: str | None = None, target: float | Target | None = None,
        note: str = "") -> dict:
    """One result; a plain number as `target` is a target on the ratio."""
    t = target if isinstance(target, Target) or target is None else Target(target)
    ratio = ratio_of(ours, reference, better)
    met = None if t is None else judge(ratio if t.of == "ratio" else ours, t.value, *t.conditions)
    return {"name": name, "ours": ours, "reference": reference, "unit": unit, "ratio": ratio,
            "target": None if t is None else t.value, "met": met, "note": note}


def same_accuracy(ours_correct: int, reference_correct: int) -> bool:
    """Equal accuracy as the targets mean it: ours at most one val image behind the reference."""
    return ours_correct >= reference_correct - 1


def short(s: Setup) -> str:
    """The note prefix of rows measured on fewer than the recipe's 25 epochs."""
    return "" if s.epochs == TUTORIAL_EPOCHS else ("quick mode: " if s.quick else f"{s.epochs} epochs: ")


per_epoch = mean_epoch_seconds
