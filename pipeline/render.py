"""The report as a document: one list of blocks rendered to Markdown and to self-contained HTML,
so both say the same.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from .summary import DASH, TABLE_ALIGN, TABLE_HEADERS, display_row

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


def build_document(rows: list[dict], summary: list[str], figures: list[tuple[str, str]], bench: dict | None, *,
                   dataset: str, classes: list[str], runs_dir: str, n_runs: int, generated: str,
                   title: str = "", note: str = "") -> list[tuple]:
    ours = [r for r in rows if r["kind"] == "ours"]
    head = (
        f"Dataset **{dataset}** ({len(classes)} classes: "
        f"{', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''}), "
        f"{n_runs} run{'s' * (n_runs != 1)} from `{runs_dir}`, generated {generated}."
    )
    legend = (
        "Accuracy is on the val images with a 95% Wilson interval. *Chosen by* says how the model and its "
        "settings were picked: CV on train or the last epoch never look at val; rows marked *best epoch on val* "
        "did, so they are optimistic and stand apart, next to the published numbers that were chosen the same "
        "way. *Reference tutorial (published)* rows are not our runs. Seconds: extract = computing the CNN codes "
        "(shared by every head on one cache), fit = fitting the head, train = fine-tuning including its per-epoch "
        "val pass and image "
        f"decoding; {DASH} = not spent or not known."
    )
    blocks: list[tuple] = [("h1", title or f"cnncodes report: {dataset}"), ("p", head)]
    if note:
        blocks.append(("p", note))
    blocks += [("h2", "Results on the validation set"),
               ("table", TABLE_HEADERS, [display_row(r) for r in rows], TABLE_ALIGN,
                [r["kind"].replace("_", "-") for r in rows]),
               ("p", legend), ("h2", "What this shows"), *[("p", s) for s in summary]]
    if figures:
        blocks.append(("h2", "Figures"))
        blocks += [("figure", name, caption) for name, caption in figures]
    if bench:
        blocks += bench_blocks(bench)
    assert ours, "table_rows always yields one row per run"
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
                    f"<td{' class=r' if a == 'r' else ''}>{html.escape(str(v))}</td>" for v, a in zip(r, align)
                )
                out.append(f'<tr class="{html.escape(c)}">{cells}</tr>')
            out.append("</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode((figdir / b[1]).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                       f"<figcaption>{_inline_html(b[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
