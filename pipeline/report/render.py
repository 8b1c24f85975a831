"""The report as a document: one list of blocks rendered to Markdown and to self-contained HTML,
so both say the same.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

DASH = "—"

# The document: one list of blocks, rendered to Markdown and to HTML, so both say the same.
# Blocks: ("h1", text) ("h2", text) ("p", text) ("table", headers, rows, align, row_classes)
#         ("figure", file name under figures/, caption)


def bench_blocks(bench: dict) -> list[tuple]:
    m = bench.get("machine") or {}
    where = ", ".join(f"{k} {v}" for k, v in m.items() if v not in (None, "")) or "not recorded"
    meta = (
        f"Measured on: {where}. Commit {bench.get('commit') or DASH}"
        + (", quick run" if bench.get("quick") else "")
        + "."
    )
    versions = bench.get("versions") or {}
    if versions:
        meta += " Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."
    # 4 significant digits, but never scientific notation for the large ones (15,000 images/s)
    num = lambda x: DASH if not isinstance(x, (int, float)) else f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"  # noqa: E731
    rows = [[str(r.get("name", "")), num(r.get("ours")), num(r.get("reference")), str(r.get("unit") or ""),
             DASH if r.get("ratio") is None else f"{r['ratio']:.2f}×", num(r.get("target")),
             {True: "yes", False: "no"}.get(r.get("met"), DASH), str(r.get("note") or "")] for r in bench["results"]]
    return [("h2", "Benchmarks"), ("p", meta),
            ("table", ["Benchmark", "Ours", "Reference", "Unit", "Ratio", "Target", "Met", "Note"], rows, "lrrlrrll",
             [""] * len(rows))]


@dataclass
class Document:
    """Everything the report says, in reading order; `build_document` lays it out as blocks."""

    title: str
    verdict: str
    head: str
    note: str
    table: tuple  # (headers, align, cells, line above the table)
    row_kinds: list[str]
    legend: list[tuple[str, str]]  # (short name, description)
    summary: list[str]
    figures: dict[str, tuple[str, str]]  # figure role -> (file name, caption)
    per_class: tuple  # (headers, cells, align)
    top_losses: list[tuple[str, str]]  # (file name, caption)
    always_wrong: tuple  # (method names, images)
    classes: list[str]
    labels: tuple  # (headers, cells, align) of the label-efficiency table
    commands: list[tuple[str, str]]  # (short name, command line)
    views: tuple = ([], [], "")  # (headers, cells, align) of what cached views buy
    curves: list[tuple[str, str]] = field(default_factory=list)  # learning-curve figures
    bench: dict | None = None


LEGEND = (
    "Accuracy is on the val images with a 95% Wilson interval. *Chosen by* says how the model and its settings were "
    "picked: CV on train or the last epoch never look at val; rows marked *best epoch on val* did, so they are "
    "optimistic and stand apart, next to the published numbers that were chosen the same way (those are not our "
    "runs: ResNet18 with ImageNet weights, from the PyTorch tutorial). *Compute s* is everything the method cost: "
    "extracting the codes (shared by every head on one cache) + fitting with CV, or fine-tuning with its image "
    f"decoding and per-epoch val pass; {DASH} = not known. metrics.csv has every column, per_class.csv every class."
)


def _wrong_table(doc: Document) -> list[tuple]:
    names, images = doc.always_wrong
    if not names:
        return []
    if not images:
        return [("p", f"No val image is misclassified by all {len(names)} methods.")]
    shown = images[:30]
    cls = lambda i: doc.classes[i] if 0 <= i < len(doc.classes) else str(i)  # noqa: E731
    rows = [[f"`{im['path']}`", cls(im["true"]),
             ", ".join(sorted({cls(q) for q in im["pred"]}))] for im in shown]
    more = f" The first {len(shown)} are listed." if len(images) > len(shown) else ""
    return [("p", f"{len(images)} val image{'s' * (len(images) != 1)} every one of the {len(names)} methods gets "
                  "wrong: look at these first (a wrong label, an ambiguous photo, or a gap in the training data)."
                  + more),
            ("table", ["Image", "True class", "Predicted as"], rows, "lll", [""] * len(rows))]


def build_document(doc: Document) -> list[tuple]:
    headers, align, cells, same = doc.table
    blocks: list[tuple] = [("h1", doc.title), ("p", doc.verdict), ("p", doc.head)]
    if doc.note:
        blocks.append(("p", doc.note))
    blocks += [("h2", "Results on the validation set")]
    if same:
        blocks.append(("p", same))
    blocks += [("table", headers, cells, align, [k.replace("_", "-") for k in doc.row_kinds]),
               ("p", "Methods: " + "; ".join(f"**{n}**: {d}" for n, d in doc.legend) + "."),
               ("p", LEGEND)]
    if "compute" in doc.figures:
        blocks.append(("figure", *doc.figures["compute"]))
    blocks += [("h2", "What this shows"), *[("p", s) for s in doc.summary]]
    if doc.per_class[0]:
        blocks += [("h2", "Per class"),
                   ("p", "Precision (of the images called this class, the share that are), recall (of this class's "
                         "images, the share found) and F1 on val."),
                   ("table", *doc.per_class, [""] * len(doc.per_class[1]))]
    if "confusion" in doc.figures:
        blocks.append(("figure", *doc.figures["confusion"]))
    if doc.top_losses or doc.always_wrong[0]:
        blocks.append(("h2", "What went wrong"))
        blocks += [("figure", name, caption) for name, caption in doc.top_losses]
        blocks += _wrong_table(doc)
    if doc.views[0]:
        blocks += [("h2", "What augmented views buy"),
                   ("p", "The same heads trained on each image's code plus K augmented views (RandomResizedCrop + "
                         "flip, cached once by `features --views K`; CV folds split by image), and val scored by the "
                         "mean over T test-time views (`features --tta T`: centre, then corner crops). Extract s is "
                         "the share of the extraction each setting used."),
                   ("table", *doc.views, [""] * len(doc.views[1]))]
    if doc.labels[0]:
        blocks += [("h2", "How many labels are needed")]
        if "labels" in doc.figures:
            blocks.append(("figure", *doc.figures["labels"]))
        blocks.append(("table", *doc.labels, [""] * len(doc.labels[1])))
    return blocks + _appendix(doc)


def _appendix(doc: Document) -> list[tuple]:
    """More figures, the commands that made the runs, the benchmarks."""
    blocks: list[tuple] = []
    rest = [doc.figures[k] for k in ("pca",) if k in doc.figures] + doc.curves
    if rest:
        blocks.append(("h2", "More figures"))
        blocks += [("figure", name, caption) for name, caption in rest]
    if doc.commands:
        rows = [[n, f"`{c}`" if c else "not recorded (a run made before commands were recorded)"]
                for n, c in doc.commands]
        blocks += [("h2", "How these runs were made"),
                   ("p", "Each run records the command that made it; run them again from the same folder to "
                         "reproduce the table (a rerun with unchanged inputs does nothing: add --force)."),
                   ("table", ["Method", "Command"], rows, "ll", [""] * len(rows))]
    if doc.bench:
        blocks += bench_blocks(doc.bench)
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}")
        elif kind == "h2":
            out.append(f"## {b[1]}")
        elif kind == "p":
            out.append(b[1])
        elif kind == "table":
            _, headers, rows, align, _classes = b
            out.append("\n".join(["| " + " | ".join(map(_md_cell, headers)) + " |",
                                  "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
                                  *("| " + " | ".join(map(_md_cell, r)) + " |" for r in rows)]))
        elif kind == "figure":
            out.append(f"![{Path(b[1]).stem}](figures/{b[1]})\n\n*{b[2]}*")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.88em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.55em; vertical-align: top; }
th { background: #f2f2f2; }
td.r { text-align: right; white-space: nowrap; }
tr.best-epoch td { background: #fff8e1; }
tr.reference td { background: #f4f4f4; color: #555; font-style: italic; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _inline_html(text: str) -> str:
    # the little Markdown the blocks use: **bold**, *italic*, `code`
    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def render_html(blocks: list[tuple], figdir: Path) -> str:
    """Self-contained HTML: figures are embedded as base64 PNG data URIs, so the file travels alone."""
    title = next((b[1] for b in blocks if b[0] == "h1"), "cnncodes report")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "table":
            _, headers, rows, align, classes = b
            out.append(
                "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>"
            )
            for r, c in zip(rows, classes):
                cells = "".join(
                    f"<td{' class=r' if a == 'r' else ''}>{_inline_html(v)}</td>" for v, a in zip(r, align)
                )
                out.append(f'<tr class="{html.escape(c)}">{cells}</tr>')
            out.append("</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode((figdir / b[1]).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                       f"<figcaption>{_inline_html(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
