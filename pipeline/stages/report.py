"""Build the report from saved runs: one metrics table, figures and a plain-words summary.

Usage: python -m pipeline report --runs RUNS_DIR [--out reports/<dataset>]

Reads every RUNS_DIR/**/metrics.json (and the history.json, features file and val images the runs
point to) and writes report.md, a self-contained report.html (the decision first: verdict, main
table, accuracy vs compute; then one folded section per question), metrics.csv, per_class.csv,
verdict.json and figures/*.png, plus benchmarks.md / .html when --bench exists, and removes the PNGs
an earlier report wrote (listed in figures/.report-files.json) that it no longer shows. It
recomputes no model and never imports torch, so it runs wherever the run folders were copied.

Flow: load_runs -> check_one_dataset -> report.build.write_report (rows, verdict, summary,
diagnostics, figures -> blocks -> Markdown, HTML and the CSVs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import UserError
from ..core.cli import Settings, opt
from ..core.files import plain_name
from ..report.build import ReportOptions, read_bench, write_report
from ..runs.read import check_one_dataset, load_runs

__all__ = ["Config", "run", "read_bench"]  # read_bench: the benchmarks file as this stage reads it


@dataclass(frozen=True)
class Config(Settings):
    runs: Path = opt(Path("reports/runs"), "folder searched recursively for the metrics.json of each run")
    out: Path = opt(Path(""), "output folder for report.md, report.html, metrics.csv and figures/; empty = "
                              "reports/<dataset>, so that each dataset's report has its own folder")
    bench: Path = opt(
        Path("reports/benchmarks.json"),
        "benchmark results from python -m bench: benchmarks.md / .html beside the report when the file exists"
    )
    title: str = opt("", "report title; empty means 'cnncodes report: <dataset>'")
    note: str = opt("", "a line under the title, e.g. which weights or command made these runs; empty = none")
    audit: Path = opt(Path(""), "an audit folder (`cnncodes audit --out DIR`): its findings become the 'Your data' "
                                "section; empty = none")


def run(cfg: Config) -> dict[str, Path]:
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise UserError(f"--out {str(cfg.out)!r} is a file; give a folder for report.md, report.html and figures/")
    runs = load_runs(cfg.runs)
    dataset = check_one_dataset(runs)
    if str(cfg.audit) not in ("", "."):
        from ..report.your_data import check_audit

        check_audit(Path(cfg.audit), dataset, runs[0].m.get("classes") or [],
                    {p["path"] for r in runs for p in r.m.get("predictions") or ()})
    options = ReportOptions(source=cfg.runs, title=cfg.title, note=cfg.note, bench=cfg.bench,
                            audit=cfg.audit if str(cfg.audit) not in ("", ".") else None)
    out = Path(cfg.out) if str(cfg.out) not in ("", ".") else default_out(dataset)
    if out.exists() and not out.is_dir():
        raise UserError(f"{str(out)!r} is a file; give --out a folder for report.md, report.html and figures/")
    return write_report(runs, dataset, out, options)


def default_out(dataset: str) -> Path:
    """reports/<dataset>: one plain folder name, whatever the dataset is called (as the features
    cache names its folder)."""
    name = plain_name(dataset)
    return Path("reports") / (name if name.strip(".") else "dataset")
