"""The report's "Your data" section, from an audit folder (`cnncodes audit --out DIR`): the images
most likely mislabelled, the near-duplicates and train/val leaks, and the outliers, each with its
score, the suspects shown as thumbnails. The audit is read, never recomputed.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..core.files import csv_unsafe
from .render import Block, FigureFile, Table, md_code, md_text

SHOWN = 5  # suspects listed (and drawn) per finding


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: csv_unsafe(v) if isinstance(v, str) else v for k, v in r.items()} for r in csv.DictReader(fh)]


def your_data(audit: Path | None, data_root: Path | None, figdir: Path) -> list[Block]:
    """The section's blocks; [] without an audit folder."""
    if not audit or not Path(audit).is_dir():
        return []
    audit = Path(audit)
    issues, dups, odd = (_rows(audit / f) for f in ("label_issues.csv", "duplicates.csv", "outliers.csv"))
    blocks = [Block("h2", "Your data"),
              Block("p", f"From the audit in {md_code(str(audit))} (`cnncodes audit`, on the cached codes): "
                         f"{len(issues)} likely label issue{'s' * (len(issues) != 1)}, {len(dups)} near-duplicate or "
                         f"leak pair{'s' * (len(dups) != 1)}, {len(odd)} outlier{'s' * (len(odd) != 1)}. Acting on "
                         "them is one step: `features --exclude` or `classify --exclude` with its exclude.txt (runs "
                         "made so are named -excluded and sit beside these in the table).")]
    if issues:
        blocks += [Block("details", "Most likely mislabelled (highest score first)"),
                   Block("table", Table(["Image", "Split", "Labelled", "Looks like", "Score"],
                                        [[md_code(r["path"]), r["split"], md_text(r["label"]),
                                          md_text(r["suggested"]), r["score"]] for r in issues[:SHOWN]], "lllll"))]
    if dups:
        blocks += [Block("details", "Near-duplicates and leaks across splits"),
                   Block("table", Table(["Image", "Split", "Same photo as", "Its split", "Similarity"],
                                        [[md_code(r["path"]), r["split"], md_code(r["other"]), r["other_split"],
                                          r["similarity"]] for r in dups[:SHOWN]], "lllll"))]
    if odd:
        blocks += [Block("details", "Outliers: far from every class"),
                   Block("table", Table(["Image", "Split", "Label", "Score"],
                                        [[md_code(r["path"]), r["split"], md_text(r["label"]), r["score"]]
                                         for r in odd[:SHOWN]], "llll"))]
    grid = _suspects_grid(issues[:SHOWN] + odd[:SHOWN], data_root, figdir)
    return blocks + ([Block("figure", grid)] if grid else [])


def _suspects_grid(suspects: list[dict], data_root: Path | None, figdir: Path) -> FigureFile | None:
    """Thumbnails of the top suspects: label issues framed red (label, then what the codes suggest)."""
    if not suspects or data_root is None:
        return None
    from . import figures

    items = [({"path": r["path"], "pred": r["suggested"], "true": r["label"]},
              f"{r['label']} → {r['suggested']}" if r["label"] != r["suggested"] else f"{r['label']} (outlier)")
             for r in suspects]
    path = figures.image_grid(items, data_root, "The audit's top suspects", figdir / "audit-suspects.png")
    return FigureFile(path.name, "The audit's top suspects: red, labelled one class and closer to another "
                                 "(label → what the codes suggest); the rest are outliers, far from every class.") \
        if path else None
