"""The report as a document: one list of blocks rendered to Markdown and to self-contained HTML,
so both say the same, in the same order.

The blocks (blocks.py): h1, h2 (a section: in HTML a collapsible `<details>`, closed), p, verdict,
list, table, figure, details, end and toc.
Everything before the first toc or h2 is the decision (`<section id="decision">`), always open.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from urllib.parse import quote

from .blocks import PAGE_PX, Block, Table, md_text, slug

_PUNCT = r"!-/:-@\[-`{-~"  # the ASCII punctuation a backslash escapes in Markdown
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


def _md_block(kind: str, content) -> str:
    if kind in ("h1", "h2", "details"):  # headings are plain text, as in the HTML
        return {"h1": "# ", "h2": "## ", "details": "### "}[kind] + md_text(content)
    if kind in ("p", "verdict"):
        return _md_inline(content)
    if kind == "list":
        return "\n".join(f"- {_md_inline(x)}" for x in content)
    if kind == "toc":
        return "Contents: " + " · ".join(f"[{md_text(t)}](#{slug(t)})" for t in content)
    if kind == "table":
        return _md_table(content)
    return (f"![{md_text(Path(content.name).stem)}](figures/{quote(content.name)})\n\n"
            f"*{_md_inline(content.caption)}*")


def render_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_md_block(kind, content) for kind, content in blocks if kind != "end") + "\n"


CSS = f"""
body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: {PAGE_PX}px; margin: 1em auto;
       padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.45em; margin: 0.3em 0 0.4em; }}
h2 {{ font-size: 1.2em; display: inline; margin: 0; }}
p.verdict {{ font-size: 1.03em; margin: 0.4em 0; }}
p.meta {{ color: #555; font-size: 0.88em; margin: 0.3em 0; }}
table {{ border-collapse: collapse; font-size: 0.86em; margin: 0.6em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.22em 0.5em; vertical-align: top; }}
th {{ background: #f2f2f2; }}
td.r {{ text-align: right; white-space: nowrap; }}
tr.recommended td {{ background: #e6f4e3; font-weight: 600; }}
tr.best-epoch td {{ background: #fff8e1; }}
tr.reference td {{ background: #f4f4f4; color: #555; font-style: italic; }}
figure {{ margin: 0.6em 0; }}
figure img {{ width: 100%; max-width: 100%; height: auto; display: block; border: 1px solid #eee; }}
figcaption {{ font-size: 0.88em; color: #444; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
nav.toc {{ margin: 1em 0 0.4em; padding: 0.5em 0.8em; background: #f7f7f7; font-size: 0.92em; }}
details.section {{ border-top: 1px solid #ddd; padding: 0.5em 0; }}
details.section > summary {{ cursor: pointer; }}
details.more {{ margin: 0.3em 0; }}
details.more > summary {{ cursor: pointer; color: #333; }}
@media print {{ details::details-content {{ content-visibility: visible; display: block; }} }}
"""
_HTML_HELD = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)|\\([" + _PUNCT + r"])", re.S)
_LINK = re.compile(r"\[([^\]\n]+)\]\(([\w./#-]+)\)")


def _inline_html(text: str) -> str:
    # the little Markdown the blocks use: **bold**, *italic*, `code` (any fence), backslash escapes,
    # [links](to.md) (to the .html beside it); code spans and escaped characters are held aside so
    # that no markup applies inside them
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
    s = _LINK.sub(lambda m: f'<a href="{re.sub(r"[.]md(?=$|#)", ".html", m.group(2))}">{m.group(1)}</a>', s)
    return re.sub("\ue000(\\d+)\ue001", lambda m: held[int(m.group(1))], s)


def _html_table(t: Table) -> list[str]:
    out = ["<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in t.headers) + "</tr></thead><tbody>"]
    for r, c in zip(t.rows, [""] * len(t.rows) if t.classes is None else t.classes):
        cells = "".join(f"<td{' class=r' if a == 'r' else ''}>{_inline_html(v)}</td>" for v, a in zip(r, t.align))
        out.append(f'<tr class="{html.escape(c)}">{cells}</tr>')
    return out + ["</tbody></table>"]


def _html_block(kind: str, content, figdir: Path) -> list[str]:
    if kind == "h1":
        return [f"<h1>{html.escape(content)}</h1>"]
    if kind in ("p", "verdict"):
        return [f"<p{' class=verdict' if kind == 'verdict' else ''}>{_inline_html(content)}</p>"]
    if kind == "list":
        return ["<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in content) + "</ul>"]
    if kind == "toc":
        return ['<nav class="toc"><strong>Contents</strong> (each section opens with a click): '
                + " · ".join(f'<a href="#{slug(t)}">{html.escape(t)}</a>' for t in content) + "</nav>"]
    if kind == "table":
        return _html_table(content)
    data = base64.b64encode((figdir / content.name).read_bytes()).decode("ascii")
    return [f'<figure id="fig-{slug(Path(content.name).stem)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(content.caption)}">'
            f"<figcaption>{_inline_html(content.caption)}</figcaption></figure>"]


def render_html(blocks: list[Block], figdir: Path) -> str:
    """Self-contained HTML: figures are embedded as base64 PNG data URIs, so the file travels alone.
    The decision first, open; then each section a closed `<details>` (a details block nests inside)."""
    title = next((b.content for b in blocks if b.kind == "h1"), "cnncodes report")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", '<section id="decision">']
    stack = ["</section>"]  # the closing tags of the open elements, innermost last
    decision = True
    for kind, content in blocks:
        if kind in ("h2", "toc") and decision:
            out, stack, decision = out + stack[::-1], [], False
        if kind == "h2":
            out, stack = out + stack[::-1], ["</section>", "</details>"]
            # the anchor inside the closed details: following a link to it opens the section (no script)
            out.append(f'<section><details class="section"><summary><h2>{html.escape(content)}</h2></summary>'
                       f'<a id="{slug(content)}"></a>')
        elif kind in ("details", "end"):
            if len(stack) > (1 if decision else 2):  # a details block already open: close it first
                out.append(stack.pop())
            if kind == "details":
                out.append(f'<details class="more"><summary>{_inline_html(content)}</summary>')
                stack.append("</details>")
        else:
            out += _html_block(kind, content, figdir)
    out += stack[::-1]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def bench_blocks(bench: dict) -> list[Block]:
    """The benchmarks page's blocks (`layout.bench_page`: a page of its own, no longer in the report)."""
    from .layout import bench_page

    return bench_page(bench)
