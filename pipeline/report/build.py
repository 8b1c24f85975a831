"""The report from loaded runs, assembled and written: table_rows -> document (verdict, tables,
summary, diagnostics, figures) -> layout.build_document -> report.md, report.html, metrics.csv,
per_class.csv, verdict.json (the recommendation and every paired test against the best),
benchmarks.md / .html when the benchmark results exist, and the PNGs in figures/ it no longer shows
removed. Never imports torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.files import read_json, write_json, write_text
from ..runs.read import Run, existing
from .blocks import Table, md_code, md_text
from .choice import Judged, judge
from .backbones import backbone_blocks
from .diagnostics import always_wrong, label_curves, label_table, per_class_table, views_table, write_per_class_csv
from .gallery import calibration_words, curve_figures, make_figures, top_loss_figures
from .layout import Document, bench_page, build_document
from .notes import protocol_note
from .quality import most_confused
from .render import render_html, render_markdown
from .reproduce import commands
from .rows import fmt_acc, legend, table, table_rows, write_csv
from .after_choice import test_split_section
from .on_test import flag_leaks
from .tables import confused_table, cost_table, epoch_table, legend_table, main_table
from .record import verdict_record
from .verdict import standing, summary_paragraphs, verdict
from .your_data import your_data


@dataclass(frozen=True)
class ReportOptions:
    source: Path | str  # the folder the runs came from, named under the title
    title: str = ""  # empty means 'cnncodes report: <dataset>'
    note: str = ""  # a line under the title; empty = none
    bench: Path | str | None = None  # benchmark results, included when the file exists
    audit: Path | str | None = None  # an audit folder: the "Your data" section


def read_bench(path: Path | str | None) -> dict | None:
    """The benchmark results file when it exists (it is optional); UserError when it is broken."""
    if not path or not Path(path).is_file():
        return None
    doc = read_json(path, "benchmarks file")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UserError(f"benchmarks file {str(path)!r} has no 'results' list (re-run `make bench` or delete it)")
    return doc


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


def document(runs: list[Run], rows: list[dict], dataset: str, figdir: Path, options: ReportOptions,
             judged: Judged | None = None) -> Document:
    """Everything the report says, from the runs and their table rows (and their judgement: the
    paired tests and the recommendation, computed once); draws the figures."""
    classes = list(runs[0].m.get("classes") or [])
    bench = " · [Benchmarks of this code](benchmarks.md)" if read_bench(options.bench) else ""
    head = (f"Dataset **{md_text(dataset)}** ({len(classes)} classes: {', '.join(map(md_text, classes[:12]))}"
            f"{', ...' if len(classes) > 12 else ''}), {len(runs)} run{'s' * (len(runs) != 1)} from "
            f"{md_code(options.source)}, generated {time.strftime('%Y-%m-%d %H:%M %Z')}.{bench}")
    ours = [r for r in rows if r["kind"] == "ours"]
    judged = judged or judge(rows, runs)
    comps, (rec, best, *_) = judged
    quality = table(ours)
    return Document(
        title=options.title or f"cnncodes report: {dataset}", verdict=verdict(rows, runs, judged), head=head,
        note=options.note, shared=quality.shared, main=main_table(rows, standing(rows, runs, comps), rec["run"]),
        epochs=epoch_table(rows), epoch_note=protocol_note(rows), summary=summary_paragraphs(rows, runs, judged),
        quality=Table(quality.headers, quality.cells, quality.align), cost=cost_table(rows),
        legend=legend_table(legend(rows)), figures=make_figures(runs, rows, figdir, judged),
        calibration=calibration_words(runs, rows, judged), per_class=per_class_table(rows, classes),
        confused=_confused(runs, (rec, best), classes), top_losses=top_loss_figures(runs, rows, figdir, judged),
        always_wrong=always_wrong(runs, rows), classes=classes, labels=label_table(label_curves(runs, rows)),
        commands=commands(runs, ours), curves=curve_figures(runs, rows, figdir), views=views_table(runs, rows),
        backbones=backbone_blocks(options.source, rows, rec, figdir),
        your_data=your_data(Path(options.audit) if options.audit else None,
                            existing(runs[0].m.get("data_root"), runs[0]), figdir, (rows, runs)),
        test_split=test_split_section(rows, runs, rec, figdir))


def _confused(runs: list[Run], pair: tuple[dict, dict], classes: list[str]) -> Table:
    """The most-confused class pairs of the recommended and the best method (once when the same)."""
    by_slug = {r.slug: r for r in runs}
    chosen = [r for r in {r["run"]: r for r in pair}.values() if by_slug[r["run"]].m["val"].get("confusion")]
    if not chosen:
        return Table([], [], "")
    cms = [by_slug[r["run"]].m["val"]["confusion"] for r in chosen]
    support = [sum(row) for row in cms[0]]
    return confused_table(most_confused(cms), [r["name"] for r in chosen], classes, support)


def write_report(runs: list[Run], dataset: str, out: Path, options: ReportOptions) -> dict[str, Path]:
    """Write the report of the runs into `out`, say what was written, and return the files by kind:
    md, html, csv, per_class, verdict (verdict.json: the recommendation and the paired tests)."""
    figdir = out / "figures"
    rows = table_rows(runs)
    flag_leaks(rows, runs, options.audit)  # after the choice's numbers: test is never used to choose
    judged = judge(rows, runs)  # the paired tests and the choice, once for every part of the report
    doc = document(runs, rows, dataset, figdir, options, judged)
    blocks = build_document(doc)
    shown = {b.content.name for b in blocks if b.kind == "figure"}
    written = {"md": write_text(out / "report.md", render_markdown(blocks)),
               "html": write_text(out / "report.html", render_html(blocks, figdir)),
               "csv": write_csv(rows, out / "metrics.csv"),
               "per_class": write_per_class_csv(rows, out / "per_class.csv"),
               "verdict": write_json(out / "verdict.json", verdict_record(rows, runs, judged))}
    bench = read_bench(options.bench)
    if bench:
        page = bench_page(bench)
        written["bench_md"] = write_text(out / "benchmarks.md", render_markdown(page))
        written["bench_html"] = write_text(out / "benchmarks.html", render_html(page, figdir))
    stale = remove_stale(figdir, shown)
    rec = doc.verdict.split("**")[1] if "**" in doc.verdict else ""
    print(f"report of {len(runs)} run{'s' * (len(runs) != 1)} on {dataset}: best {rows[0]['name']} {fmt_acc(rows[0])}"
          + (f"; {rec.lower()}" if rec else ""))
    print(f"wrote {written['md']}, {written['html']}, {written['csv']} and {len(shown)} figures in {figdir}"
          + (f" (removed {len(stale)} stale)" if stale else ""))
    return written
