"""The commands that reproduce the table, as a user of this project types them: `cnncodes <stage> ...`
(not `python -m pipeline`), paths kept as given, and the `features` command carrying the
`--views K --tta T` that the runs on its codes need (a file's recorded command is the one that
first made it; views are often added by a second call).

The user's paths are kept as given, so that every command runs as printed from the project's
folder: a relative path as typed; an absolute path under this project relative to it (the same
file); under this machine's home folder as `~/...` (the same file for the same user, and no home
folder in a shared report); anything else exactly as given. A folder outside the project is never
guessed into one of the project's own (`/srv/photos/data/x` stays; `data/x` is the default that
downloads hymenoptera).
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path, PurePosixPath

from ..runs.read import Run
from .blocks import Command

ROOT = Path(__file__).resolve().parents[2]  # this project, where the commands are meant to be run
_PYTHON = re.compile(r"(^|/)python[\d.]*$")


def project_path(word: str, root: Path = ROOT, home: str | None = None) -> str:
    """An absolute path as this project's user would write it (see the module docstring)."""
    if not word.startswith("/"):
        return word
    home = os.path.expanduser("~") if home is None else home
    p = PurePosixPath(os.path.normpath(word))
    for base in (PurePosixPath(root.as_posix()), PurePosixPath(os.path.realpath(root))):
        if p == base or base in p.parents:
            return p.relative_to(base).as_posix() or "."
    if home not in ("", "/") and (word == home or word.startswith(home.rstrip("/") + "/")):
        return "~" + word[len(home.rstrip("/")):]
    return word


def _words(w: str, root: Path, home: str | None) -> list[str]:
    flag, eq, value = w.partition("=")
    if eq and flag.startswith("--"):
        v = project_path(value, root, home)
        return [flag, v] if v.startswith("~/") else [f"{flag}={v}"]  # a shell expands ~ at a word's start only
    return [project_path(w, root, home)]


def _quote(w: str) -> str:
    """shlex.quote, but a leading `~/` left outside the quotes so that the shell still expands it."""
    return "~/" + shlex.quote(w[2:]) if w.startswith("~/") and len(w) > 2 else shlex.quote(w)


def cnncodes_command(line: str, root: Path = ROOT, home: str | None = None) -> str:
    """`python -m pipeline classify --features /home/x/cnncodes/features/f.h5` ->
    `cnncodes classify --features features/f.h5`; a line that does not parse is kept as it is."""
    try:
        words = shlex.split(line)
    except ValueError:
        return line
    if len(words) >= 3 and _PYTHON.search(words[0]) and words[1:3] == ["-m", "pipeline"]:
        words = ["cnncodes", *words[3:]]
    if words and words[0].endswith("/cnncodes"):
        words[0] = "cnncodes"
    if not words:
        return line
    return " ".join(map(_quote, [words[0], *(x for w in words[1:] for x in _words(w, root, home))]))


def _set_flag(words: list[str], flag: str, value: int, at_least: bool) -> None:
    """Give `flag` the value (or at least it), in place: replaced where given, else appended."""
    at = next((i for i, w in enumerate(words) if w == flag or w.startswith(flag + "=")), None)
    if at is None:
        words += [flag, str(value)]
        return
    given = words[at].partition("=")[2] or (words[at + 1] if at + 1 < len(words) else "")
    if not (at_least and given.isdigit() and int(given) >= value):
        words[at: at + (1 if "=" in words[at] else 2)] = [flag, str(value)]


def with_views(line: str, views: int, tta: int, exact: bool = False) -> str:
    """A `features` command carrying at least `--views views` and `--tta tta` (when above 0 and 1);
    with `exact`, any stage's command carrying exactly these two (a head on plain codes keeps its
    `--views 0 --tta 1` once the file also holds views: classify's default is all the file holds)."""
    try:
        words = shlex.split(line)
    except ValueError:
        return line
    if not exact and "features" not in words[:4]:
        return line
    for flag, want, none in (("--views", views, 0), ("--tta", tta, 1)):
        if exact or want > none:
            _set_flag(words, flag, want, not exact)
    return shlex.join(words)


def features_arg(line: str) -> str | None:
    """The `--features` path of a command (a fine-tune on cached codes), or None."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w.startswith("--features="):
            return w.partition("=")[2]
        if w == "--features" and i + 1 < len(words):
            return words[i + 1]
    return None


def _views_needed(m: dict) -> tuple[int, int]:
    """(train views, TTA views) a run used from its codes file."""
    if m.get("stage") == "classify":
        return int(m.get("views") or 0), int(m.get("tta") or 1)
    src = str((m.get("hyperparameters") or {}).get("train_source") or "")
    found = re.match(r"(\d+) cached augmented views", src)  # a fine-tune on cached views (--loop codes)
    return (int(found.group(1)) if found else 0), 1


def commands(runs: list[Run], ours: list[dict]) -> list[Command]:
    """The commands that made the runs, in table order, each once, with the methods each made; a run
    on cached codes also names the `features` command that made them, with the views they need."""
    by_slug = {r.slug: r for r in runs}
    need: dict[str, tuple[int, int]] = {}  # features command -> the most (views, tta) a run on it used
    by_file: dict[str, str] = {}  # features file -> its command
    for row in ours:
        m = by_slug[row["run"]].m
        if m.get("features_command"):
            by_file.setdefault(str(m.get("features_file")), m["features_command"])
    for row in ours:
        m = by_slug[row["run"]].m
        fc = m.get("features_command") or by_file.get(str(features_arg(m.get("command") or "")))
        if fc:
            (k, t), (k2, t2) = need.get(fc, (0, 1)), _views_needed(m)
            need[fc] = (max(k, k2), max(t, t2))
    made: dict[str, list[str]] = {}
    for row in ours:
        m = by_slug[row["run"]].m
        fc = m.get("features_command") or by_file.get(str(features_arg(m.get("command") or "")))
        if fc:
            made.setdefault(cnncodes_command(with_views(fc, *need[fc])), ["codes for"]).append(row["name"])
        line = m.get("command") or ""
        if fc and m.get("stage") == "classify" and line and need[fc] != (0, 1):  # the file holds views
            line = with_views(line, int(m.get("views") or 0), int(m.get("tta") or 1), exact=True)
        made.setdefault(cnncodes_command(line) if line else "", []).append(row["name"])
    return [Command("codes for " + ", ".join(names[1:]) if names[0] == "codes for" else ", ".join(names), c)
            for c, names in made.items()]
