"""The report from loaded runs, assembled and written: table_rows -> document (verdict, summary,
diagnostics, figures) -> build_document -> report.md, report.html, metrics.csv, per_class.csv,
verdict.json (the recommendation and every paired test against the best), and
the PNGs in figures/ it no longer shows removed. Never imports torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.files import read_json, write_json, write_text
from ..runs.folder import Run
from .diagnostics import always_wrong, label_curves, label_table, per_class_table, views_table, write_per_class_csv
from .gallery import curve_figures, make_figures, top_loss_figures
from .render import Command, Document, build_document, md_code, md_text, render_html, render_markdown
from .rows import fmt_acc, legend, table, table_rows, write_csv
from .verdict import summary_paragraphs, verdict, verdict_record


@dataclass(frozen=True)
class ReportOptions:
    source: Path | str  # the folder the runs came from, named under the title
    title: str = ""  # empty means 'cnncodes report: <dataset>'
    note: str = ""  # a line under the title; empty = none
    bench: Path | str | None = None  # benchmark results, included when the file exists


def read_bench(path: Path | str | None) -> dict | None:
    """The benchmark results file when it exists (it is optional); UserError when it is broken."""
    if not path or not Path(path).is_file():
        return None
    doc = read_json(path, "benchmarks file")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UserError(f"benchmarks file {str(path)!r} has no 'results' list (re-run `make bench` or delete it)")
    return doc


def commands(runs: list[Run], ours: list[dict]) -> list[Command]:
    """The commands that made the runs, in table order, each once, with the methods each made; a
    head's run also names the `features` command that made its codes."""
    by_slug, made = {r.slug: r for r in runs}, {}
    for row in ours:
        m = by_slug[row["run"]].m
        if m.get("features_command"):
            made.setdefault(m["features_command"], ["codes for"]).append(row["name"])
        made.setdefault(m.get("command") or "", []).append(row["name"])
    return [Command(" ".join(names[:1]) + " " + ", ".join(names[1:]) if names[0] == "codes for" else ", ".join(names),
                    c) for c, names in made.items()]


REPORT_FILES = ".report-files.json"  # in figures/: the PNGs the last report wrote there


def remove_stale(figdir: Path, keep: set[str]) -> list[str]:
    """Delete the PNGs in figures/ that an earlier report wrote and this one no longer shows, then
    list this report's in figures/.report-files.json. Only a file an earlier report listed there is
    ever removed: anything else in figures/ (a plot of the user's own) is left alone."""
    import json

    try:
        before = json.loads((figdir / REPORT_FILES).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):  # none yet (or not ours): remove nothing
        before = []
    stale = sorted({n for n in before if isinstance(n, str) and n.endswith(".png") and n == Path(n).name
                    and not n.startswith(".") and n not in keep and (figdir / n).is_file()})
    for name in stale:
        (figdir / name).unlink(missing_ok=True)
    if figdir.is_dir():
        write_json(figdir / REPORT_FILES, {"schema": "cnncodes-report-files/1", "files": sorted(keep)})
    return stale


def document(runs: list[Run], rows: list[dict], dataset: str, figdir: Path, options: ReportOptions) -> Document:
    """Everything the report says, from the runs and their table rows; draws the figures."""
    classes = list(runs[0].m.get("classes") or [])
    head = (f"Dataset **{md_text(dataset)}** ({len(classes)} classes: {', '.join(map(md_text, classes[:12]))}"
            f"{', ...' if len(classes) > 12 else ''}), {len(runs)} run{'s' * (len(runs) != 1)} from "
            f"{md_code(options.source)}, generated {time.strftime('%Y-%m-%d %H:%M %Z')}.")
    ours = [r for r in rows if r["kind"] == "ours"]
    return Document(
        title=options.title or f"cnncodes report: {dataset}", verdict=verdict(rows, runs), head=head,
        note=options.note, table=table(rows), row_kinds=[r["kind"] for r in rows], legend=legend(rows),
        summary=summary_paragraphs(rows, runs), figures=make_figures(runs, rows, figdir),
        per_class=per_class_table(rows, classes), top_losses=top_loss_figures(runs, rows, figdir),
        always_wrong=always_wrong(runs, rows), classes=classes, labels=label_table(label_curves(runs, rows)),
        commands=commands(runs, ours), curves=curve_figures(runs, rows, figdir), views=views_table(runs, rows),
        bench=read_bench(options.bench))


def write_report(runs: list[Run], dataset: str, out: Path, options: ReportOptions) -> dict[str, Path]:
    """Write the report of the runs into `out`, say what was written, and return the files by kind:
    md, html, csv, per_class, verdict (verdict.json: the recommendation and the paired tests)."""
    figdir = out / "figures"
    rows = table_rows(runs)
    doc = document(runs, rows, dataset, figdir, options)
    blocks = build_document(doc)
    shown = {b.content.name for b in blocks if b.kind == "figure"}
    written = {"md": write_text(out / "report.md", render_markdown(blocks)),
               "html": write_text(out / "report.html", render_html(blocks, figdir)),
               "csv": write_csv(rows, out / "metrics.csv"),
               "per_class": write_per_class_csv(rows, out / "per_class.csv"),
               "verdict": write_json(out / "verdict.json", verdict_record(rows, runs))}
    stale = remove_stale(figdir, shown)
    rec = doc.verdict.split("**")[1] if "**" in doc.verdict else ""
    print(f"report of {len(runs)} run{'s' * (len(runs) != 1)} on {dataset}: best {rows[0]['name']} {fmt_acc(rows[0])}"
          + (f"; {rec.lower()}" if rec else ""))
    print(f"wrote {written['md']}, {written['html']}, {written['csv']} and {len(shown)} figures in {figdir}"
          + (f" (removed {len(stale)} stale)" if stale else ""))
    return written
