"""Synthetic CNN codes in the real cache format: the one writer of the tests and the benchmarks.

It lives in the package, beside the store it writes through, rather than in bench/ or tests/:
both import it as `pipeline.codes.synthetic`, which works however pytest or the benchmark is
started (the package is installed into the venv), and it is written only through `write_codes`,
so the files it makes are the files `classify` reads. It needs numpy and h5py, no torch.

Two kinds of codes:
  blobs (default)   separable Gaussian blobs, labels in turn: heads that work reach ~100%
  overlap=True      classes that overlap as real CNN codes do: Gaussian class means `sep` apart
                    per dimension, unit noise, random labels and a ReLU (codes are post-activation);
                    separable blobs would converge in a few iterations and hide what solvers cost
Rows are generated and written a block at a time, so millions of them never sit in memory
(unless `standardise` asks for the train split's mean and sd, which needs all of it).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from ..images.scan import ImageRecord
from .store import Header, SplitPiece, write_codes


@dataclass(frozen=True)
class Synthetic:
    """What `write_synthetic_codes` generates."""

    n_train: int = 30
    n_val: int = 20
    dim: int = 16
    classes: tuple[str, ...] = ("a", "b", "c")
    sep: float = 6.0  # sd of the class means: small values overlap
    seed: int = 0
    overlap: bool = False  # True: random labels and a ReLU, like real codes (see the module docstring)
    standardise: bool = False  # scale every split by the train split's mean and sd
    list_files: bool = True  # record one scanned image per row (False: none, for millions of rows)
    dataset: str = "blobs"
    block: int = 50_000  # rows generated at a time
    extract_seconds: float = 1.5  # what the header says extracting these codes cost (classify budgets by it)


def write_synthetic_codes(path: Path, spec: Synthetic | None = None, **fields) -> Path:
    """A features file at `path` of `spec` (or Synthetic(), fields replaced by `fields`); returns path."""
    spec = replace(spec or Synthetic(), **fields)
    rng = np.random.default_rng(spec.seed)
    means = rng.normal(0, spec.sep, (len(spec.classes), spec.dim))
    labels = {name: _labels(spec, rng, n) for name, n in (("train", spec.n_train), ("val", spec.n_val))}
    blocks = {name: _codes(spec, rng, means, y) for name, y in labels.items()}
    if spec.standardise:
        train = np.concatenate(list(blocks["train"])) if spec.n_train else np.zeros((0, spec.dim))
        mu, sd = train.mean(0), train.std(0) + 1e-8
        blocks = {"train": iter([(train - mu) / sd]), "val": ((x - mu) / sd for x in blocks["val"])}
    pieces = {name: _piece(spec, name, y, blocks[name]) for name, y in labels.items()}
    write_codes(path, Header(fingerprint="f" * 64, inputs={"image_list": "x"}, classes=list(spec.classes),
                             dataset=spec.dataset, backbone="resnet18", weights="none(seed=0)", weights_arg="none",
                             transform={"resize": 256, "crop": 224, "decode": "PIL full"}, device="cpu",
                             extract_seconds=spec.extract_seconds), pieces)
    return Path(path)


def _labels(spec: Synthetic, rng: np.random.Generator, n: int) -> np.ndarray:
    k = len(spec.classes)
    return rng.integers(0, k, n) if spec.overlap else np.arange(n) % k


def _codes(spec: Synthetic, rng: np.random.Generator, means: np.ndarray, y: np.ndarray) -> Iterator[np.ndarray]:
    """Codes of the rows labelled y, a block at a time (float64; drawn when asked for)."""
    for start in range(0, len(y), spec.block):
        x = means[y[start:start + spec.block]] + rng.normal(0, 1, (len(y[start:start + spec.block]), spec.dim))
        yield np.maximum(x, 0) if spec.overlap else x


def _paths(spec: Synthetic, name: str, y: np.ndarray, start: int = 0) -> list[str]:
    width = max(4, len(str(max(spec.n_train, spec.n_val))))
    return [f"{name}/{spec.classes[c]}/{start + i:0{width}d}.jpg" for i, c in enumerate(y)]


def _piece(spec: Synthetic, name: str, y: np.ndarray, blocks: Iterator[np.ndarray]) -> SplitPiece:
    files = [ImageRecord(p, int(c), 1, 1) for p, c in zip(_paths(spec, name, y), y)] if spec.list_files else []

    def chunks():
        start = 0
        for x in blocks:
            part = y[start:start + len(x)]
            yield x.astype(np.float32), part, _paths(spec, name, part, start)
            start += len(x)

    return SplitPiece(len(y), spec.dim, files, [], chunks())
