"""Stage settings as frozen dataclasses, and the argparse CLI built from them.

Each field's metadata carries its help text (and choices); `add_arguments` turns the fields into
`--flags` with the defaults shown, so a stage's settings are declared once.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from . import UserError

DEVICES = ("auto", "cpu", "cuda")


def opt(default: Any, help: str, choices: tuple | None = None, **kw) -> Any:
    """A dataclass field that carries its CLI help."""
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


@dataclass(frozen=True)
class Common:
    """Flags every compute stage shares."""

    device: str = opt("auto", "where to run: auto picks cuda when available", DEVICES)
    seed: int = opt(0, "random seed (weights=none init, CV folds, training order)")
    workers: int = opt(
        -1, "DataLoader worker processes for decoding (0 = in process, -1 = one per spare core, at most 8)"
    )
    batch_size: int = opt(32, "images per batch")

    def __post_init__(self):
        positive(batch_size=self.batch_size)
        if self.workers < -1:
            raise UserError(f"--workers must be -1 (automatic), 0 or more (got {self.workers})")


def positive(**values) -> None:
    """UserError naming the first flag whose value is below 1."""
    for name, v in values.items():
        if v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {v})")


def check_classes(labels, classes: list[str], what: str) -> None:
    """Every class needs usable training images, and there must be two classes at least: a head
    trained on a subset would silently give its classes' positions to others."""
    import numpy as np

    if len(classes) < 2:
        raise UserError(f"{what}: only one class ({classes[0] if classes else 'none'}); classifying needs two or more")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise UserError(f"{what}: class {', '.join(map(repr, empty))} has no usable training images (every file was "
                        "skipped as unreadable); fix or remove the class folder")


def parse_splits(text: str, exactly: int | None = None) -> tuple[str, ...]:
    """'train,val' -> ('train', 'val'): the one parser of every --splits flag."""
    splits = tuple(s.strip() for s in str(text).split(",") if s.strip())
    if not splits or len(set(splits)) != len(splits) or (exactly and len(splits) != exactly):
        want = f"exactly {exactly} distinct" if exactly else "distinct"
        raise UserError(f"--splits needs {want} comma-separated folder names (got {text!r})")
    return splits


class Parser(argparse.ArgumentParser):
    """argparse, but a bad value is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str):  # noqa: D102 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _type_of(f: dataclasses.Field, hints: dict) -> Any:
    t = hints[f.name]
    if t in (int, float, str, bool, Path):
        return t
    return str


def _default_text(default) -> str:
    """' (default: X)' where a default says something; nothing for None, '' or an empty tuple."""
    if default in (None, "", ()) or default is False:
        return ""
    return f" (default: {'on' if default is True else default})"


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field. Defaults are shown only where they mean something; a boolean that is
    off by default is a plain switch (--force), one that is on by default can be turned off
    (--fast-decode / --no-fast-decode)."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        t = _type_of(f, hints)
        if meta.get("positional"):
            parser.add_argument(f.name, nargs=meta.get("nargs", "+"), type=t, help=meta.get("help", ""))
            continue
        kw: dict[str, Any] = {"default": f.default, "dest": f.name,
                              "help": meta.get("help", "") + ("" if meta.get("required") else _default_text(f.default))}
        if t is bool:
            kw["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        else:
            kw.update(type=t, choices=meta.get("choices"), metavar=f.name.upper() if not meta.get("choices") else None)
            if meta.get("nargs"):
                kw["nargs"] = meta["nargs"]
        if meta.get("required"):
            kw["required"] = True
            kw.pop("default")
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)


# The command line of the stage being run, as typed, and that stage's name (set by __main__); a
# stage called from Python gets one rebuilt from its settings instead (command_line).
TYPED: list[str] = []
TYPED_STAGE: list[str] = []


def command_line(cfg, stage: str) -> str:
    """The command that makes this run again: as typed when the CLI ran `stage`, else rebuilt from
    the settings that differ from the defaults. Recorded in every run, listed by the report."""
    import shlex

    if TYPED_STAGE == [stage]:
        return shlex.join(TYPED)
    words = ["python", "-m", "pipeline", stage]
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v == f.default and not f.metadata.get("required"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            words.append(flag if v else f"--no-{flag[2:]}")
        elif f.metadata.get("positional"):
            words += [str(x) for x in v]
        else:
            words += [flag, *(map(str, v) if isinstance(v, tuple) else [str(v)])]
    return shlex.join(words)


def from_args(cls: type, ns: argparse.Namespace):
    vals = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)}
    for k, v in vals.items():
        if isinstance(v, list):
            vals[k] = tuple(v)
    return cls(**vals)


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
