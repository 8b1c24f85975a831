"""Exclusion lists: images to leave out, one path per line as the features cache records it
(relative to the data folder, or as a manifest wrote it), '#' starting a comment line, blank lines
ignored, surrounding whitespace stripped. A path that cannot be such a line (it starts with '#'
or '"', has surrounding spaces or a line break) is written as a JSON string: a line starting with
'"' is one quoted path, with JSON's escapes, so every path can be named. `audit` writes one
(exclude.txt: the second image of each near-duplicate or leaking pair); `features` and `classify`
read it with `read_exclusions`.

    # cnncodes audit: near-duplicates and leaks of features/hym/resnet18-DEFAULT.h5
    train/ants/0013035.jpg
    "#ants/first.jpg"
    "train/bees/two\\nlines.jpg"
"""
from __future__ import annotations

import json
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
    for n, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if entry.startswith('"'):
            out.add(_quoted(entry, f"{what} line {n}"))
        elif entry and not entry.startswith("#"):
            out.add(entry)
    return out


def _quoted(entry: str, where: str) -> str:
    """The path a '"'-quoted line names (a JSON string), or a UserError naming the line."""
    try:
        p = json.loads(entry)
    except ValueError:
        p = None
    if not isinstance(p, str) or not p:
        raise UserError(f"{where}: a line starting with '\"' is one quoted path (a JSON string), not {entry[:60]!r}")
    return p


def check_exclusions(excluded: set[str], known: Iterable[str], what: str) -> None:
    """UserError when the list names paths that `known` (the cache's paths) does not hold: a typo
    would otherwise exclude nothing, silently."""
    unknown = sorted(excluded - set(known))
    if unknown:
        raise UserError(f"{what} names {len(unknown)} path{'s' * (len(unknown) > 1)} that the codes do not hold "
                        f"(first: {unknown[0]!r}); paths are as the features file records them")


def check_named(excluded: set[str], what: str) -> None:
    """UserError for a list that names no image: a run marked as made without some images would
    differ from the plain one in name only."""
    if not excluded:
        raise UserError(f"{what} names no image (only comments or blank lines): nothing to leave out; run without "
                        "--exclude")


def check_emptied(before: dict[str, list[int]], after: dict[str, list[int]], classes: list[str], what: str) -> None:
    """UserError naming the class and split an exclusion empties ({split: labels} before and after):
    checked before any work, with the real reason (not 'every file was unreadable' later)."""
    for split, labels in before.items():
        gone = sorted(set(labels) - set(after[split]))
        if gone:
            raise UserError(f"{what} leaves class {classes[int(gone[0])]!r} no {split} image (it names every one of "
                            "them): exclude fewer, or remove the class folder")


def listable(p: str) -> bool:
    """Whether a path survives the round trip through a list as a plain line (one line, not a
    comment, not quoted, not stripped); any other is written quoted (format_exclusions)."""
    return bool(p) and p == p.strip() and not p.startswith(("#", '"')) and not any(
        c in p for c in "\n\r\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def format_exclusions(paths: Iterable[str], comments: Iterable[str] = ()) -> str:
    """The text of an exclusion list: `comments` as '#' lines, then one path per line; a path that
    cannot be a plain line (a newline in its name, a leading '#') as a JSON string, which
    read_exclusions reads back exactly."""
    lines = [f"# {c}" for c in comments]
    for p in paths:
        lines.append(p if listable(p) else json.dumps(p))
    return "\n".join(lines) + "\n"


def apply_exclusions(s, list_path: str):
    """The scan without the images the list at `list_path` names: each moves to its split's skipped
    list with the reason, so the features file records what was left out and why (its image
    list, and so its fingerprint, no longer holds them)."""
    from dataclasses import replace

    excluded, what = read_exclusions(list_path), f"--exclude {list_path!r}"
    check_named(excluded, what)
    check_exclusions(excluded, (r.path for sp in s.splits.values() for r in sp.items), what)
    why = f"excluded by {Path(list_path).name}"
    splits = {n: replace(sp, items=[r for r in sp.items if r.path not in excluded],
                         skipped=sorted(sp.skipped + [(r.path, why) for r in sp.items if r.path in excluded]))
              for n, sp in s.splits.items()}
    check_emptied({n: [r.label for r in sp.items] for n, sp in s.splits.items()},
                  {n: [r.label for r in sp.items] for n, sp in splits.items()}, s.classes, what)
    print(f"{what}: leaving out {len(excluded)} of {sum(len(sp.items) for sp in s.splits.values())} images")
    return replace(s, splits=splits)
