"""The report's blocks: what layout.py lists and render.py turns into Markdown and HTML, and the
two functions that embed a name from the outside world in their text (`md_text`, `md_code`).

Blocks: h1, h2 (a section: in HTML a collapsible `<details>`, closed, with an id the contents link
to), p, verdict (the opening paragraph), list (bullets), table, figure, details (a collapsible part of a
section, until the next details, end or h2; a `###` heading in Markdown), end (closes a details block;
nothing in Markdown) and toc (links to the sections).
"""
from __future__ import annotations

import re
from typing import NamedTuple

PAGE_PX = 1100  # the page's content width; every figure is shown this wide

# The paragraphs, captions and cells of the blocks are a little Markdown (**bold**, *italic*,
# `code`, backslash escapes); a name from the outside world (class, file, dataset, command) is
# embedded through `md_text` or `md_code`, so it shows as written in both renderings. Whatever the
# blocks hold, report.md never carries raw HTML or a line break inside a paragraph (render.py's `_md_inline`).


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
    kind: str  # h1, h2, p, verdict, details (content: the text), end, list, toc (a list of texts), table, figure
    content: str | list | Table | FigureFile


def slug(title: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", str(title).lower()).replace(" ", "-")


class AlwaysWrong(NamedTuple):
    methods: list[str]  # the names of the methods compared
    images: list[dict]  # the val images every one of them gets wrong: path, true, pred (one per method)


class Command(NamedTuple):
    methods: str  # the methods the command made, as the table names them
    line: str  # the command line; empty when not recorded
