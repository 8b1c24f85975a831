"""The report as a document: one list of blocks rendered to Markdown and to self-contained HTML,
so both say the same.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from .rows import DASH, LegendEntry, ResultsTable


# The paragraphs, captions and cells of the blocks are a little Markdown (**bold**, *italic*,
# `code`, backslash escapes); a name from the outside world (class, file, dataset, command) is
# embedded through `md_text` or `md_code`, so it shows as written in both renderings. Whatever the
# blocks hold, report.md never carries raw HTML or a line break inside a paragraph (`_md_inline`).

_PUNCT = r"!-/:-@\[-`{-~"  # the ASCII punctuation a backslash escapes in Markdown


def md_text(name) -> str:
    """A name as Markdown text that shows exactly as written: the characters that would start markup
    (emphasis, code, links, raw HTML, entities) are backslash-escaped; a line break becomes a space."""
    s = re.sub(r"[\\`*\[\]<>~]", r"\\\g<0>", re.sub(r"\r\n?|\n", " ", str(name)))
    s = re.sub(r"(?<![^\W_])_|_(?![^\W_])", r"\\_", s)  # an underscore inside a word is no emphasis
    return re.sub(r"&(?=#?\w+;)", r"\\&", s)


def md_code(text) -> str:
    """A path or command as a Markdown code span: fenced with one more backtick than the longest run
    inside it (and padded when it starts or ends with a backtick or space), line breaks as spaces."""
    s = re.sub(r"\r\n?|\n", " ", str(text))
    fence = "`" * (max(map(len, re.findall("`+", s)), default=0) + 1)
    pad = " " if s[:1] in ("`", " ") or s[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


class Table(NamedTuple):
    headers: list[str]
    rows: list[list[str]]
    align: str  # one letter per column: l(eft) or r(ight)
    classes: list[str] | None = None  # the HTML class of each row; None: no class


class FigureFile(NamedTuple):
    name: str  # file name under figures/
    caption: str


class Block(NamedTuple):
    kind: str  # h1, h2, p (content: the text), table (a Table) or figure (a FigureFile)
    content: str | Table | FigureFile


def bench_blocks(bench: dict) -> list[Block]:
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
    return [Block("h2", "Benchmarks"), Block("p", meta),
            Block("table", Table(["Benchmark", "Ours", "Reference", "Unit", "Ratio", "Target", "Met", "Note"], rows,
                                 "lrrlrrll"))]


class AlwaysWrong(NamedTuple):
    methods: list[str]  # the names of the methods compared
    images: list[dict]  # the val images every one of them gets wrong: path, true, pred (one per method)


class Command(NamedTuple):
    methods: str  # the methods the command made, as the table names them
    line: str  # the command line; empty when not recorded


@dataclass
class Document:
    """Everything the report says, in reading order; `build_document` lays it out as blocks."""

    title: str
    verdict: str
    head: str
    note: str
    table: ResultsTable
    row_kinds: list[str]
    legend: list[LegendEntry]
    summary: list[str]
    figures: dict[str, FigureFile]  # by role: compute, confusion, labels, pca
    per_class: Table
    top_losses: list[FigureFile]
    always_wrong: AlwaysWrong
    classes: list[str]
    labels: Table  # the label-efficiency table
    commands: list[Command]
    views: Table = Table([], [], "")  # what cached views buy
    curves: list[FigureFile] = field(default_factory=list)  # learning-curve figures
    bench: dict | None = None


LEGEND = (
    "Accuracy is on the val images with a 95% Wilson interval. *Chosen by* says how the model and its settings were "
    "picked: CV on train or the last epoch never look at val; rows marked *best epoch on val* did, so they are "
    "optimistic and stand apart, next to the published numbers that were chosen the same way (those are not our "
    "runs: ResNet18 with ImageNet weights, from the PyTorch tutorial). *Compute s* is everything the method cost: "
    "extracting the codes (shared by every head on one cache) + fitting with CV, or fine-tuning with its image "
    f"decoding and per-epoch val pass; {DASH} = not known. metrics.csv has every column, per_class.csv every class."
)


def _wrong_table(doc: Document) -> list[Block]:
    names, images = doc.always_wrong
    if not names:
        return []
    if not images:
        return [Block("p", f"No val image is misclassified by all {len(names)} methods.")]
    shown = images[:30]
    cls = lambda i: doc.classes[i] if 0 <= i < len(doc.classes) else str(i)  # noqa: E731
    rows = [[md_code(im["path"]), md_text(cls(im["true"])),
             ", ".join(md_text(c) for c in sorted({cls(q) for q in im["pred"]}))] for im in shown]
    more = f" The first {len(shown)} are listed." if len(images) > len(shown) else ""
    return [Block("p", f"{len(images)} val image{'s' * (len(images) != 1)} every one of the {len(names)} methods "
                       "gets wrong: look at these first (a wrong label, an ambiguous photo, or a gap in the training "
                       "data)." + more),
            Block("table", Table(["Image", "True class", "Predicted as"], rows, "lll"))]


def build_document(doc: Document) -> list[Block]:
    """The document in reading order: the verdict and the table, what went wrong, then the appendix."""
    return _results(doc) + _details(doc) + _appendix(doc)


def _results(doc: Document) -> list[Block]:
    """Title, verdict, the results table with its legend, and what the numbers say."""
    blocks = [Block("h1", doc.title), Block("p", doc.verdict), Block("p", doc.head)]
    if doc.note:
        blocks.append(Block("p", doc.note))
    blocks += [Block("h2", "Results on the validation set")]
    if doc.table.shared:
        blocks.append(Block("p", doc.table.shared))
    kinds = [k.replace("_", "-") for k in doc.row_kinds]
    blocks += [Block("table", Table(doc.table.headers, doc.table.cells, doc.table.align, kinds)),
               Block("p", "Methods: " + "; ".join(f"**{md_text(e.name)}**: {e.description}" for e in doc.legend) + "."),
               Block("p", LEGEND)]
    if "compute" in doc.figures:
        blocks.append(Block("figure", doc.figures["compute"]))
    return blocks + [Block("h2", "What this shows"), *[Block("p", s) for s in doc.summary]]


def _details(doc: Document) -> list[Block]:
    """Per class, what went wrong, what views buy, how many labels are needed."""
    blocks: list[Block] = []
    if doc.per_class.headers:
        blocks += [Block("h2", "Per class"),
                   Block("p", "Precision (of the images called this class, the share that are), recall (of this "
                              "class's images, the share found) and F1 on val."),
                   Block("table", doc.per_class)]
    if "confusion" in doc.figures:
        blocks.append(Block("figure", doc.figures["confusion"]))
    if doc.top_losses or doc.always_wrong.methods:
        blocks.append(Block("h2", "What went wrong"))
        blocks += [Block("figure", f) for f in doc.top_losses]
        blocks += _wrong_table(doc)
    if doc.views.headers:
        blocks += [Block("h2", "What augmented views buy"),
                   Block("p", "The same heads trained on each image's code plus K augmented views (RandomResizedCrop "
                              "+ flip, cached once by `features --views K`; CV folds split by image), and val scored "
                              "by the mean over T test-time views (`features --tta T`: centre, then corner crops). "
                              "Extract s is the share of the extraction each setting used."),
                   Block("table", doc.views)]
    if doc.labels.headers:
        blocks += [Block("h2", "How many labels are needed")]
        if "labels" in doc.figures:
            blocks.append(Block("figure", doc.figures["labels"]))
        blocks.append(Block("table", doc.labels))
    return blocks


def _appendix(doc: Document) -> list[Block]:
    """More figures, the commands that made the runs, the benchmarks."""
    blocks: list[Block] = []
    rest = [doc.figures[k] for k in ("pca",) if k in doc.figures] + doc.curves
    if rest:
        blocks.append(Block("h2", "More figures"))
        blocks += [Block("figure", f) for f in rest]
    if doc.commands:
        rows = [[md_text(c.methods), md_code(c.line) if c.line else "not recorded (a run made before commands were "
                 "recorded)"] for c in doc.commands]
        blocks += [Block("h2", "How these runs were made"),
                   Block("p", "Each run records the command that made it; run them again from the same folder to "
                              "reproduce the table (a rerun with unchanged inputs does nothing: add --force)."),
                   Block("table", Table(["Method", "Command"], rows, "ll"))]
    if doc.bench:
        blocks += bench_blocks(doc.bench)
    return blocks


_MD_TOKEN = re.compile(r"\\[" + _PUNCT + r"]|(`+)|[<>|]|\r\n?|\n")


def _md_inline(text, cell: bool = False) -> str:
    """Inline Markdown made safe whatever it holds: `<` and `>` escaped outside code spans (no raw
    HTML), line breaks as spaces, an unmatched backtick escaped, and in a table cell every `|`
    escaped (code spans included, as GFM tables want). Backslash escapes and code spans are kept."""
    text, out, i = str(text), [], 0
    while m := _MD_TOKEN.search(text, i):
        out.append(text[i:m.start()])
        tok, i = m.group(0), m.end()
        if m.group(1):  # a code span runs to the next backtick run of the same length
            close = re.compile(rf"(?<!`){tok}(?!`)").search(text, i)
            if close is None:
                out.append("\\`" * len(tok))
                continue
            code = re.sub(r"\r\n?|\n", " ", text[i:close.start()])
            out.append(tok + (code.replace("|", "\\|") if cell else code) + tok)
            i = close.end()
        elif tok in "<>":
            out.append("\\" + tok)
        elif tok == "|":
            out.append("\\|" if cell else "|")
        elif tok[0] in "\r\n":
            out.append(" ")
        else:
            out.append(tok)  # a backslash escape
    return "".join(out) + text[i:]


def _md_cell(text: str) -> str:
    return _md_inline(text, cell=True)


def _md_table(t: Table) -> str:
    return "\n".join(["| " + " | ".join(map(_md_cell, t.headers)) + " |",
                      "|" + "|".join("---:" if a == "r" else "---" for a in t.align) + "|",
                      *("| " + " | ".join(map(_md_cell, r)) + " |" for r in t.rows)])


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, content in blocks:
        if kind == "h1":
            out.append(f"# {md_text(content)}")  # headings are plain text, as in the HTML
        elif kind == "h2":
            out.append(f"## {md_text(content)}")
        elif kind == "p":
            out.append(_md_inline(content))
        elif kind == "table":
            out.append(_md_table(content))
        elif kind == "figure":
            out.append(f"![{md_text(Path(content.name).stem)}](figures/{quote(content.name)})\n\n"
                       f"*{_md_inline(content.caption)}*")
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


_HTML_HELD = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)|\\([" + _PUNCT + r"])", re.S)


def _inline_html(text: str) -> str:
    # the little Markdown the blocks use: **bold**, *italic*, `code` (any fence), backslash escapes;
    # code spans and escaped characters are held aside so that no markup applies inside them
    held: list[str] = []

    def hold(m: re.Match) -> str:
        if m.group(3) is not None:
            held.append(html.escape(m.group(3)))
        else:
            code = m.group(2)
            code = code[1:-1] if code[:1] == code[-1:] == " " and code.strip() else code
            held.append(f"<code>{html.escape(code)}</code>")
        return f"\ue000{len(held) - 1}\ue001"

    s = html.escape(_HTML_HELD.sub(hold, re.sub("[\ue000\ue001]", "", str(text))))
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])", r"<em>\1</em>", s)
    return re.sub("\ue000(\\d+)\ue001", lambda m: held[int(m.group(1))], s)


def _html_table(t: Table) -> list[str]:
    out = ["<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in t.headers) + "</tr></thead><tbody>"]
    for r, c in zip(t.rows, [""] * len(t.rows) if t.classes is None else t.classes):
        cells = "".join(f"<td{' class=r' if a == 'r' else ''}>{_inline_html(v)}</td>" for v, a in zip(r, t.align))
        out.append(f'<tr class="{html.escape(c)}">{cells}</tr>')
    return out + ["</tbody></table>"]


def render_html(blocks: list[Block], figdir: Path) -> str:
    """Self-contained HTML: figures are embedded as base64 PNG data URIs, so the file travels alone."""
    title = next((b.content for b in blocks if b.kind == "h1"), "cnncodes report")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(content)}</p>")
        elif kind == "table":
            out += _html_table(content)
        elif kind == "figure":
            data = base64.b64encode((figdir / content.name).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(content.caption)}">'
                       f"<figcaption>{_inline_html(content.caption)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
