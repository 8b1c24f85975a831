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

from .. import UserError

DEVICES = ("auto", "cpu", "cuda")


def opt(default: Any, help: str, choices: tuple | None = None, **kw) -> Any:
    """A dataclass field that carries its CLI help."""
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


@dataclass(frozen=True)
class Settings:
    """The base of every stage's Config: `typed` is the command line as typed when the CLI made
    these settings (not a flag; empty when a stage is called from Python), so the record of a run
    says exactly what the user ran."""

    typed: tuple[str, ...] = field(default=(), compare=False, repr=False, metadata={"cli": False})


@dataclass(frozen=True)
class Common(Settings):
    """Flags every compute stage shares."""

    device: str = opt("auto", "where to run: auto picks cuda when available", DEVICES)
    seed: int = opt(0, "random seed (weights=none init, CV folds, training order)")
    workers: int = opt(
        -1, "DataLoader worker processes for decoding (0 = in process, -1 = one per spare core, at most 8)"
    )
    batch_size: int = opt(32, "images per batch")

    def __post_init__(self):
        check_loading(self)


def check_loading(cfg) -> None:
    """The checks of a Config that decodes images: --batch-size positive, --workers -1 or more and
    clamped to 2 per core (Common's, and predict's, which is not a Common)."""
    positive(batch_size=cfg.batch_size)
    if cfg.workers < -1:
        raise UserError(f"--workers must be -1 (automatic), 0 or more (got {cfg.workers})")
    at_most_cores(cfg, "workers", 2)


def at_most_cores(cfg, name: str, per_core: int = 1) -> None:
    """Clamp the flag `name` of a just-made Config to `per_core` processes per core of this
    machine, saying so in one line: `--jobs 500` on 2 cores would start 500 processes, each with
    its own copy of the data, for no speed. Decoding workers may wait on the disk, so they get 2
    per core; CV jobs are pure computation, 1."""
    import os

    most, value = per_core * (os.cpu_count() or 1), getattr(cfg, name)
    if value > most:
        print(f"--{name.replace('_', '-')} {value} is more than this machine's {os.cpu_count() or 1} cores can use: "
              f"{most}", file=sys.stderr)
        object.__setattr__(cfg, name, most)


def positive(**values) -> None:
    """UserError naming the first flag whose value is below 1."""
    for name, v in values.items():
        if v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {v})")


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
    for f in _flags(cls):
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
            if "const" in meta:  # nargs="?": the value of the bare flag
                kw["const"] = meta["const"]
        if meta.get("required"):
            kw["required"] = True
            kw.pop("default")
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)


def command_line(cfg, stage: str) -> str:
    """The command that makes this run again: as typed when the CLI ran `stage`, else rebuilt from
    the settings that differ from the defaults. Recorded in every run, listed by the report."""
    import shlex

    if getattr(cfg, "typed", ()):
        return shlex.join(cfg.typed)
    words = ["python", "-m", "pipeline", stage]
    for f in _flags(cfg):
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


def _flags(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def flag_values(cfg) -> dict:
    """The settings as their flags hold them (paths as text), without how they were typed: what a
    run records, and what its up-to-date check compares."""
    return {f.name: str(v) if isinstance(v := getattr(cfg, f.name), Path) else v for f in _flags(cfg)}


def path_component(value: str, flag: str) -> str:
    """`value` when it is one plain folder or file name (no separator, no leading dot, so not . or
    .. or a hidden name, no NUL): a name given by the user never reaches outside the folder it is
    meant for."""
    if value.startswith(".") or not value.strip() or any(c in value for c in "/\\\0") or value != value.strip():
        raise UserError(f"{flag} must be a plain folder name (no /, \\ or leading dot, no leading or trailing spaces); "
                        f"got {value!r}")
    return value


def from_args(cls: type, ns: argparse.Namespace, typed: list[str] | tuple[str, ...] = ()):
    """The settings from parsed flags; `typed` is the command line they came from (recorded)."""
    vals: dict[str, Any] = {f.name: getattr(ns, f.name) for f in _flags(cls)}
    for k, v in vals.items():
        if isinstance(v, list):
            vals[k] = tuple(v)
    return cls(**vals, typed=tuple(typed))
