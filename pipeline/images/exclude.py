"""Exclusion lists: images to leave out, one path per line as the features cache records it
(relative to the data folder, or as a manifest wrote it), '#' starting a comment line, blank lines
ignored, surrounding whitespace stripped. `audit` writes one (exclude.txt: the second image of
each near-duplicate or leaking pair); `features` and `classify` can read it with `read_exclusions`.

    # cnncodes audit: near-duplicates and leaks of features/hym/resnet18-DEFAULT.h5
    train/ants/0013035.jpg
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .. import UserError

MAX_BYTES = 64 << 20  # an exclusion list is text: a larger file is the wrong file


def read_exclusions(path: Path | str) -> set[str]:
    """The paths an exclusion list names. A missing, unreadable, binary or non-UTF-8 file is a
    one-line UserError naming it (and the line, where there is one)."""
    path = Path(path)
    what = f"exclusion list {str(path)!r}"
    try:
        if not path.is_file():
            raise UserError(f"{what} does not exist or is not a file")
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{what} is over {MAX_BYTES >> 20} MiB: not an exclusion list")
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"{what} is not readable ({e.strerror or e})") from None
    if b"\0" in raw:
        raise UserError(f"{what} is a binary file, not one path per line")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{what} line {line}: not UTF-8 text") from None
    out = set()
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            out.add(entry)
    return out


def check_exclusions(excluded: set[str], known: Iterable[str], what: str) -> None:
    """UserError when the list names paths that `known` (the cache's paths) does not hold: a typo
    would otherwise exclude nothing, silently."""
    unknown = sorted(excluded - set(known))
    if unknown:
        raise UserError(f"{what} names {len(unknown)} path{'s' * (len(unknown) > 1)} that the codes do not hold "
                        f"(first: {unknown[0]!r}); paths are as the features file records them")


def listable(p: str) -> bool:
    """Whether a path survives the round trip through a list (one line, not a comment, not stripped)."""
    return bool(p) and p == p.strip() and not p.startswith("#") and not any(c in p for c in "\n\r\0\x0b\x0c\x1c\x1d"
                                                                            "\x1e\x85\u2028\u2029")


def format_exclusions(paths: Iterable[str], comments: Iterable[str] = ()) -> str:
    """The text of an exclusion list: `comments` as '#' lines, then one path per line. A path that
    cannot be a line of its own (a newline in its name, a leading '#') is written as a comment
    with its repr, so a reader sees it and nothing else is excluded by accident."""
    lines = [f"# {c}" for c in comments]
    for p in paths:
        lines.append(p if listable(p) else f"# not listable, exclude by hand: {p!r}")
    return "\n".join(lines) + "\n"


def apply_exclusions(s, list_path: str):
    """The scan without the images the list at `list_path` names: each moves to its split's skipped
    list with the reason, so the features file records what was left out and why (its image
    list, and so its fingerprint, no longer holds them)."""
    from dataclasses import replace

    excluded = read_exclusions(list_path)
    check_exclusions(excluded, (r.path for sp in s.splits.values() for r in sp.items), f"--exclude {list_path!r}")
    why = f"excluded by {Path(list_path).name}"
    splits = {n: replace(sp, items=[r for r in sp.items if r.path not in excluded],
                         skipped=sorted(sp.skipped + [(r.path, why) for r in sp.items if r.path in excluded]))
              for n, sp in s.splits.items()}
    return replace(s, splits=splits)
