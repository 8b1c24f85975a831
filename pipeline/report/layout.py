"""What the report says, in reading order, as blocks (render.py turns them into Markdown and HTML):
the decision first (verdict, the main table with the recommended method starred, the best-epoch and
published rows folded away, the accuracy-vs-compute figure), the contents, then one short section per
question. The benchmarks are a page of their own (`bench_page`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .blocks import AlwaysWrong, Block, Command, FigureFile, Table, md_code, md_text
from .rows import DASH
from .tables import COLUMN_NOTES, STAR


@dataclass
class Document:
    """Everything the report says; `build_document` lays it out as blocks."""

    title: str
    verdict: str
    head: str
    note: str
    shared: str  # what every run shares, one line above the main table
    main: Table  # the decision table: one row per method of ours
    epochs: Table  # best epoch on val and published rows
    epoch_note: str
    summary: list[str]
    quality: Table  # every quality number per method
    cost: Table  # what each method costs to make and to use
    legend: Table  # what each method is
    figures: dict[str, FigureFile]  # by role: compute, confusion, labels, pca, calibration
    calibration: str  # the words beside the reliability diagram
    per_class: Table
    confused: Table  # the most-confused class pairs
    top_losses: list[FigureFile]
    always_wrong: AlwaysWrong
    classes: list[str]
    labels: Table  # the label-efficiency table
    commands: list[Command]
    views: Table = Table([], [], "")  # what cached views buy
    your_data: list[Block] = field(default_factory=list)  # the audit's findings (your_data.py)
    curves: list[FigureFile] = field(default_factory=list)  # learning-curve figures
    test_split: list[Block] = field(default_factory=list)  # the test split, after the choice (after_choice.py)
    backbones: list[Block] = field(default_factory=list)  # a sweep's backbones (backbones.py), else none


def build_document(doc: Document) -> list[Block]:
    """The decision, the contents, then the sections (each one short)."""
    sections = [s for s in [doc.backbones, *_sections(doc)] if len(s) > 1]
    toc = [Block("toc", [s[0].content for s in sections])] if sections else []
    return _decision(doc) + toc + [b for s in sections for b in s]


def _decision(doc: Document) -> list[Block]:
    blocks = [Block("h1", doc.title), Block("verdict", doc.verdict), Block("p", doc.head)]
    if doc.note:
        blocks.append(Block("p", doc.note))
    if doc.shared:
        blocks.append(Block("p", doc.shared))
    blocks.append(Block("table", doc.main))
    if "compute" in doc.figures:
        blocks.append(Block("figure", doc.figures["compute"]))
    if doc.epochs.headers:
        blocks += [Block("details", "Best epoch on val and published numbers: optimistic, so not ranked"),
                   Block("table", doc.epochs), Block("p", doc.epoch_note), Block("end", "")]
    return blocks


def _sections(doc: Document) -> list[list[Block]]:
    return [
        [Block("h2", "What the numbers say"), *(Block("p", s) for s in doc.summary)],
        doc.test_split,
        [Block("h2", "Every number per method"), Block("table", doc.quality),
         Block("details", "What each method costs to make and to use"), Block("table", doc.cost),
         Block("details", "What each method is"), Block("table", doc.legend),
         Block("details", "What the columns mean"), Block("list", COLUMN_NOTES)],
        _calibration(doc), _per_class(doc), _wrong(doc), doc.your_data, _views(doc), _labels(doc),
        _more_figures(doc),
        _commands(doc),
    ]


def _calibration(doc: Document) -> list[Block]:
    blocks = [Block("h2", "Can its confidence be trusted")]
    if "calibration" in doc.figures:
        blocks.append(Block("figure", doc.figures["calibration"]))
    return blocks + ([Block("p", doc.calibration)] if doc.calibration else [])


def _per_class(doc: Document) -> list[Block]:
    blocks = [Block("h2", "Per class and most confused")]
    if doc.confused.headers:
        blocks += [Block("p", "The class pairs most often confused on val by the recommended and the best method "
                              "(count, and its share of the true class's val images):"), Block("table", doc.confused)]
    if "confusion" in doc.figures:
        blocks.append(Block("figure", doc.figures["confusion"]))
    if doc.per_class.headers:
        blocks += [Block("details", "Precision, recall and F1 of every class"),
                   Block("p", "Precision (of the images called this class, the share that are), recall (of this "
                              "class's images, the share found) and F1 on val."), Block("table", doc.per_class)]
    return blocks


def _wrong(doc: Document) -> list[Block]:
    blocks = [Block("h2", "What went wrong"), *(Block("figure", f) for f in doc.top_losses)]
    names, images = doc.always_wrong
    if not names:
        return blocks
    if not images:
        return blocks + [Block("p", f"No val image is misclassified by all {len(names)} methods.")]
    shown = images[:30]
    cls = lambda i: doc.classes[i] if 0 <= i < len(doc.classes) else str(i)  # noqa: E731
    rows = [[md_code(im["path"]), md_text(cls(im["true"])),
             ", ".join(md_text(c) for c in sorted({cls(q) for q in im["pred"]}))] for im in shown]
    more = f" The first {len(shown)} are listed." if len(images) > len(shown) else ""
    return blocks + [
        Block("p", f"{len(images)} val image{'s' * (len(images) != 1)} every one of the {len(names)} methods gets "
                   "wrong: look at these first (a wrong label, an ambiguous photo, or a gap in the training data)."
                   + more),
        Block("table", Table(["Image", "True class", "Predicted as"], rows, "lll"))]


def _views(doc: Document) -> list[Block]:
    if not doc.views.headers:
        return []
    return [Block("h2", "What augmented views buy"),
            Block("p", "The same heads trained on each image's code plus K augmented views (RandomResizedCrop + flip, "
                       "cached once by `features --views K`; CV folds split by image), and val scored by the mean "
                       "over T test-time views (`features --tta T`: centre, then corner crops; using the model then "
                       "costs T backbone passes per image). Extract s is the share of the extraction each setting "
                       "used."),
            Block("table", doc.views)]


def _labels(doc: Document) -> list[Block]:
    if not doc.labels.headers:
        return []
    fig = [Block("figure", doc.figures["labels"])] if "labels" in doc.figures else []
    return [Block("h2", "How many labels are needed"), *fig, Block("table", doc.labels)]


def _more_figures(doc: Document) -> list[Block]:
    rest = [doc.figures[k] for k in ("pca",) if k in doc.figures] + doc.curves
    return [Block("h2", "More figures"), *(Block("figure", f) for f in rest)] if rest else []


def _commands(doc: Document) -> list[Block]:
    if not doc.commands:
        return []
    rows = [[md_text(c.methods), md_code(c.line) if c.line else "not recorded (a run made before commands were "
             "recorded)"] for c in doc.commands]
    return [Block("h2", "How to reproduce"),
            Block("p", "Each run records the command that made it, written here as typed from the project's folder "
                       "(`cnncodes` is `python -m pipeline`). Run them in this order to remake every row of the "
                       "table; a rerun with unchanged inputs does nothing (add --force)."),
            Block("table", Table(["Method", "Command"], rows, "ll"))]


def bench_page(bench: dict, report: str = "report") -> list[Block]:
    """benchmarks.md / .html: the developer benchmarks of this code, apart from the user's report."""
    m = bench.get("machine") or {}
    where = ", ".join(f"{k} {v}" for k, v in m.items() if v not in (None, "")) or "not recorded"
    meta = f"Measured on: {where}. Commit {bench.get('commit') or DASH}" + (", quick run" if bench.get("quick") else "")
    versions = bench.get("versions") or {}
    if versions:
        meta += ". Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items())
    # 4 significant digits, but never scientific notation for the large ones (15,000 images/s)
    num = lambda x: DASH if not isinstance(x, (int, float)) else f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"  # noqa: E731
    rows = [[md_text(r.get("name", "")), num(r.get("ours")), num(r.get("reference")), md_text(r.get("unit") or ""),
             DASH if r.get("ratio") is None else f"{r['ratio']:.2f}×", num(r.get("target")),
             {True: "yes", False: "no"}.get(r.get("met"), DASH), md_text(r.get("note") or "")]
            for r in bench["results"]]
    return [Block("h1", "cnncodes benchmarks"),
            Block("p", f"How fast this code runs, for its developers; the results are in the [report]({report}.md). "
                       + meta + "."),
            Block("table", Table(["Benchmark", "Ours", "Reference", "Unit", "Ratio", "Target", "Met", "Note"], rows,
                                 "lrrlrrll"))]


__all__ = ["Document", "build_document", "bench_page", "STAR"]
