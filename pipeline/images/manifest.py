"""CSV manifests (columns path, label and, optionally, split) as image lists: the same records, checks
and skip reasons as a folder scan, and a one-line error naming the line for any malformed row. A
manifest without a split column (or with it empty on every row) is split once as a plain folder of
class folders is (records.split_automatically: stratified, seeded, by path; the rule recorded).
"""
from __future__ import annotations

import os
from pathlib import Path

from .. import UserError
from .records import ImageFolderScan, ImageRecord, Split, _unusable, carve_val, split_automatically
# how datasets spell the usual splits: a manifest row's split matches a --splits name case-insensitively or
# through these; a row of a usual split that was not asked for is left out with a message
from .shapes import CANONICAL, SPLIT_ALIASES
from .splits import FRACTIONS


MANIFEST_COLUMNS = ("path", "label", "split")


MAX_LINE = 128 * 1024  # csv's own field size limit: a longer line is no manifest row


def _split_of(value: str, splits: tuple[str, ...]) -> str | None:
    """The --splits name a manifest's split value means: itself, the same in other case, or an alias."""
    low = value.lower()
    return next((s for s in splits if s == value), None) or next(
        (s for s in splits if s.lower() == low or any({low, s.lower()} <= g for g in SPLIT_ALIASES)), None)


def _manifest_rows(manifest: Path) -> list[tuple[int, str, str, str]]:
    """(line, path, label, split) of every row of a CSV manifest; a UserError naming the line for
    anything else: not UTF-8, a NUL byte, a line over 128 KiB, unbalanced quotes, a short row."""
    import csv
    import io

    where = f"manifest {str(manifest)!r}"
    try:
        data = manifest.read_bytes()
    except OSError as e:
        raise UserError(f"{where} is not readable ({e.strerror})") from None
    line = lambda pos: data.count(b"\n", 0, pos) + 1  # noqa: E731
    if b"\0" in data:
        raise UserError(f"{where}, line {line(data.index(bytes(1)))}: a NUL byte (a manifest is a CSV text file)")
    lines = data.split(b"\n")
    if max(map(len, lines)) > MAX_LINE:
        n = next(i for i, s in enumerate(lines) if len(s) > MAX_LINE) + 1
        raise UserError(f"{where}, line {n}: longer than {MAX_LINE // 1024} KiB; a manifest row is path,label,split")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}, line {line(e.start)}: not UTF-8 text (byte {data[e.start]:#04x}); save it as "
                        "UTF-8") from None
    reader, rows, start = csv.reader(io.StringIO(text, newline=""), strict=True), [], 1
    try:
        header = [c.strip() for c in next(reader, [])]
        twice = sorted({c for c in header if header.count(c) > 1 and c})
        if twice:
            raise UserError(f"{where}, line 1: the header names the column {twice[0]!r} twice")
        missing = [c for c in MANIFEST_COLUMNS if c not in header]
        if set(missing) & {"path", "label"}:
            raise UserError(f"{where} lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)} (it needs "
                            "a header line: path,label,split; without split it is split automatically)")
        at = [header.index(c) if c in header else None for c in MANIFEST_COLUMNS]
        start = reader.line_num + 1
        for row in reader:
            if any(f.strip() for f in row[len(header):]) or (len(row) < len(header) and any(f.strip() for f in row)):
                hint = " (an unclosed quote?)" if any("\n" in f for f in row) else ""
                raise UserError(f"{where}, line {start}: {len(row)} fields where the header has {len(header)}{hint}")
            if any(f.strip() for f in row):
                rows.append((start, *(row[i].strip() if i is not None else "" for i in at)))
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{where}, line {start}: {e} (unbalanced quotes?)") from None
    return rows


def scan_manifest(manifest: Path, splits: tuple[str, ...] = ("train", "val"),
                  fractions: tuple[float, float, float] | None = None) -> ImageFolderScan:
    """The images a CSV manifest lists (columns path, label and split; paths relative to the
    manifest's folder or absolute), in the manifest's order, with the same checks and skip reasons as
    a folder scan. Classes are the labels, sorted, as ImageFolder sorts its class folders; every
    class needs images in the first split. A row's split matches a --splits name whatever its case,
    or by alias (validation -> val); a row of an unknown split is an error, never dropped. `auto`
    means train and val, and test when rows have it; train and test rows without val have val
    carved from train (scan.carve_val), as a folder of train/ + test/ does. Without a split column
    (or with it empty on every row) the images are split here by `fractions`
    (scan.split_automatically, as a plain folder is); a split on some rows only is an error."""
    where, listed = f"manifest {str(manifest)!r}", _manifest_rows(manifest)
    blank = [n for n, *_, s in listed if not s]
    if listed and len(blank) == len(listed):
        return _split_here(manifest, listed, splits, fractions)
    if blank:
        raise UserError(f"{where}: {len(blank)} rows have no split (line {blank[0]}) while {len(listed) - len(blank)} "
                        "have one: give every row a split, or leave the split column out to have the manifest split "
                        "automatically (--split)")
    auto, carve = splits == ("auto",), False
    if auto:
        present = {_split_of(s, CANONICAL) for *_, s in listed}
        carve = "val" not in present and "test" in present
        splits = ("train", "test") if carve else ("train", "val", "test") if "test" in present else ("train", "val")
    rows = [(n, p, label, _split_of(s, splits), s) for n, p, label, s in listed]
    other: dict[str, list[int]] = {}
    for n, _, _, name, s in rows:
        if name is None:
            other.setdefault(s, []).append(n)
    unknown = {s: ns for s, ns in other.items() if not any(s.lower() in g for g in SPLIT_ALIASES)}
    if unknown:
        found, first = sorted({s for *_, s in rows}), list(unknown.items())[:5]
        raise UserError(f"{where}: {sum(map(len, unknown.values()))} rows have a split that is none of "
                        f"{', '.join(splits)}: " + ", ".join(f"{s!r} (line {ns[0]})" for s, ns in first)
                        + f"; the splits found are {', '.join(map(repr, found[:10]))}{' ...' * (len(found) > 10)}; "
                        "fix the rows or name the split in --splits")
    for s, ns in other.items():
        print(f"{where}: {len(ns)} rows of split {s!r} left out (not in --splits {','.join(splits)})")
    classes, out = _records(manifest, rows, splits)
    for name, split in out.items():
        if not split.items:
            raise UserError(f"{where} lists no usable image for split {name!r}")
    lacking = sorted(set(classes) - {classes[r.label] for r in out[splits[0]].items})
    if lacking:
        raise UserError(f"{where}: class {', '.join(map(repr, lacking))} has no usable {splits[0]!r} image")
    s = ImageFolderScan(manifest.parent, classes, out, manifest=manifest.name)
    return carve_val(s, fractions or FRACTIONS) if carve else s


def _split_here(manifest: Path, listed: list, splits: tuple[str, ...],
                fractions: tuple[float, float, float] | None) -> ImageFolderScan:
    """A manifest without splits, split once into train, val and test (scan.split_automatically)."""
    if splits != ("auto",):
        raise UserError(f"manifest {str(manifest)!r} has no split column: it is split automatically with --splits "
                        f"auto (the default; shares from --split), not into {', '.join(splits)}")
    classes, out = _records(manifest, [(n, p, label, "all", "") for n, p, label, _ in listed], ("all",))
    return split_automatically(manifest.parent, classes, out["all"], fractions or FRACTIONS, manifest.name)


def _records(manifest: Path, rows: list, splits: tuple[str, ...]) -> tuple[list[str], dict[str, Split]]:
    """(classes, a Split per name of `splits`) from (line, path, label, split name or None, value)
    rows: each usable file an ImageRecord, each unusable one skipped with its reason."""
    root, where = manifest.parent, f"manifest {str(manifest)!r}"
    classes = sorted({label for _, p, label, name, _ in rows if name and p and label})
    if not classes:
        raise UserError(f"{where} lists no image of the splits {', '.join(splits)}")
    index, out, seen = {c: i for i, c in enumerate(classes)}, {n: Split(n, []) for n in splits}, {}
    for _, p, label, name, _ in rows:
        if name is None:
            continue
        split = out[name]
        if not p or not label:
            split.skipped.append((p or "(empty path)", "manifest row without a path or label"))
            continue
        f = Path(p) if Path(p).is_absolute() else root / p
        why = _unusable(f, seen)
        if why:
            split.skipped.append((p, why))
        else:
            st = f.stat()
            seen[os.path.realpath(f)] = p
            split.items.append(ImageRecord(p, index[label], st.st_size, st.st_mtime_ns))
    return classes, out
