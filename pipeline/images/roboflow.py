"""Roboflow's classification CSV export: each split folder (train/, valid/, test/) holds its images
loose and a `_classes.csv` that labels them one-hot:

    filename, ants, bees
    0013035_jpg.rf.1b2c.jpg,1,0

Read here into (classes, rows) for scan.py, which checks the files as for any folder. A row with
no class or several marked (a multi-label export) is a one-line error naming the line: cnncodes
takes one label per image. Only plain file names are taken (no folder, no '..'), so a row cannot
name a file outside its split folder.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .. import UserError

LABELS = "_classes.csv"


def read_classes_csv(path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names in the header's order, (file name, label) per row) of one `_classes.csv`."""
    where = f"{str(path)!r}"
    try:
        text = path.read_bytes().decode("utf-8-sig")
        table = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{where} is not a readable UTF-8 CSV ({type(e).__name__})") from None
    header = [c.strip() for c in (table[0] if table else [])]
    if len(header) < 3 or header[0].lower() != "filename":
        raise UserError(f"{where}: expected Roboflow's header 'filename, <class>, <class>, ...' (got {header[:4]})")
    classes, rows = header[1:], []
    for n, row in enumerate(table[1:], 2):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        name, marks = cells[0], cells[1:]
        if len(marks) != len(classes) or any(m not in ("0", "1") for m in marks):
            raise UserError(f"{where}, line {n}: {len(marks)} class cells of 0 or 1 expected, one per class "
                            f"({len(classes)})")
        hot = [i for i, m in enumerate(marks) if m == "1"]
        if len(hot) != 1:
            raise UserError(f"{where}, line {n}: {name!r} has {len(hot)} classes marked; cnncodes takes one label per "
                            "image (export single-label, or as 'Folder Structure')")
        if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
            raise UserError(f"{where}, line {n}: {name!r} is not a file name in its split folder")
        rows.append((name, hot[0]))
    return classes, rows
