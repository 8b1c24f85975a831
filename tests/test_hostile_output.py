"""Hostile names on the way out: class and file names that hold HTML, Markdown, spreadsheet formulas,
tabs and newlines or matplotlib's `$`, and output paths that cannot be written. Each case is a
one-line error with exit 2 before any work, or a correct result; nothing is lost, nothing is left
half-written, and nothing outside --out is touched."""
from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, make_image, write_synthetic_codes

HOSTILE = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "a`b|c\nd", "cost_$5_$10",
           '=HYPERLINK("http://x")', "-2+3")


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A head run on classes with hostile names (val mistakes included) and its report, made once;
    figures/ already holds a plot of the user's own."""
    from pipeline.stages import report
    from pipeline.stages.classify import Config, classify

    root = tmp_path_factory.mktemp("hostile")
    codes = write_synthetic_codes(root / "c.h5", classes=HOSTILE, n_train=36, n_val=24, overlap=True, sep=0.8)
    [run] = classify(Config(features=codes, head="softmax", out=root / "ru`ns", folds=3, label_curve="off"))
    out = root / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "my_plot.png").write_bytes(b"the user's own")
    report.run(report.Config(runs=root / "ru`ns", out=out, bench=root / "none.json"))
    return root, run, out


# --- 6: Markdown ------------------------------------------------------------------------------

def test_report_md_shows_hostile_class_and_file_names_as_text_not_markup(hostile):
    _, _, out = hostile
    md = (out / "report.md").read_text()
    outside_code = re.sub(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", "", md)  # a code span shows < as it is
    assert not re.search(r"(?<!\\)[<>]", outside_code)  # no raw HTML: every < and > is escaped
    assert "\\<script\\>alert(1)\\</script\\>" in md and "\\<img src=x onerror=alert(1)\\>" in md
    # a newline in a name splits no table: every line of a table starts and ends with a pipe
    for block in md.split("\n\n"):
        if block.startswith("| "):
            assert all(line.startswith("|") and line.endswith("|") for line in block.splitlines()), block
    assert "a\\`b\\|c d (n=" in md  # the per-class header: backtick and pipe escaped, newline a space
    assert "``cnncodes classify" in md  # a backtick in the command: a longer fence
    assert "val/a`b\\|c d/" in md  # the always-wrong table: the path as a code span, its pipe escaped for GFM
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page


@pytest.mark.parametrize("name", [*HOSTILE, "**bold** _x_ [l](u) &amp; a\\b ``` \r\n |", "`", " ` "])
def test_escaped_names_render_exactly_as_written_in_html_and_markdown(name):
    from pipeline.report.blocks import md_code, md_text
    from pipeline.report.render import _inline_html, _md_inline

    flat = name.replace("\r\n", " ").replace("\n", " ")
    assert _inline_html(md_text(name)) == html.escape(flat)
    assert _inline_html(md_code(name)) == f"<code>{html.escape(flat)}</code>"
    assert "\n" not in _md_inline(md_text(name)) and "<" not in _md_inline(name).replace("\\<", "")
    assert _md_inline(md_text(name), cell=True).count("|") == _md_inline(md_text(name), cell=True).count("\\|")


def test_markdown_text_the_blocks_write_themselves_is_unchanged():
    from pipeline.report.blocks import md_text
    from pipeline.report.render import _inline_html, _md_inline

    text = "**Use linsvc** (mobilenet_v2 codes): `features --views K`, *Chosen by*, hymenoptera_data"
    assert _md_inline(text) == text and md_text("mobilenet_v2 codes + kNN") == "mobilenet_v2 codes + kNN"
    assert _inline_html(text) == ("<strong>Use linsvc</strong> (mobilenet_v2 codes): <code>features --views K</code>, "
                                  "<em>Chosen by</em>, hymenoptera_data")


# --- 7: spreadsheet formulas ------------------------------------------------------------------

def test_csv_safe_quotes_formula_cells_reversibly():
    from pipeline.core.files import csv_safe, csv_unsafe

    for cell in ("=1+1", "+x", "-2", "@SUM(A1)", "\tx", "\rx", "'=x", "''-x"):
        assert csv_safe(cell) == "'" + cell and csv_unsafe(csv_safe(cell)) == cell
    for cell in ("a=b", "x-1", "'quoted", "", "plain.jpg"):
        assert csv_safe(cell) == cell and csv_unsafe(cell) == cell


def test_per_class_and_predictions_csv_quote_names_and_keep_numbers(hostile, tmp_path):
    from pipeline.runs.folder import write_predictions

    _, run, out = hostile
    per = _read_csv(out / "per_class.csv")
    classes = [r[3] for r in per[1:]]
    assert "'=HYPERLINK(\"http://x\")" in classes and "'-2+3" in classes and "cost_$5_$10" in classes
    assert all(float(r[4]) >= 0 for r in per[1:])  # precision stays a number
    preds = _read_csv(run / "predictions.csv")
    assert {"'=HYPERLINK(\"http://x\")", "'-2+3"} <= {r[1] for r in preds[1:]}
    assert any(r[0].startswith("val/=HYPERLINK") for r in preds[1:])  # a path that does not start with = is kept
    # a negative margin is a number, not a name: no quote
    f = write_predictions(tmp_path, [{"path": "-x.jpg", "true": 0, "pred": 1, "score": -0.5}], ["=a", "@b"], "margin")
    assert _read_csv(f)[1][:4] == ["'-x.jpg", "'=a", "'@b", "-0.5"]


# --- 7, 8, 11: predict ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head_run(tmp_path_factory):
    """A head on 512-d synthetic codes of resnet18 with random weights: predict runs the real backbone."""
    from pipeline.stages.classify import Config, classify

    root = tmp_path_factory.mktemp("head")
    codes = write_synthetic_codes(root / "c.h5", classes=("=cmd|calc", "tab\there", "new\nline"), dim=512,
                                  n_train=12, n_val=6)
    [run] = classify(Config(features=codes, head="softmax", out=root / "runs", folds=2, label_curve="off"))
    return run


def test_predict_escapes_tabs_and_newlines_on_stdout_and_quotes_formulas_in_csv(head_run, tmp_path):
    from pipeline.stages.predict import list_images

    names = ["a\tb.jpg", "new\nline.jpg", "back\\slash.jpg", "=cmd.jpg", "-x.jpg", "plain.jpg"]
    for i, n in enumerate(names):
        make_image(tmp_path / "imgs" / n, (40 * i, 90, 200), size=(40, 32), seed=i)
    r = cli("predict", "--model", head_run, "--device", "cpu", "--workers", "0", tmp_path / "imgs",
            "--csv", tmp_path / "out.csv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "path\tclass\tprobability" and len(lines) == len(names) + 1
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 3 and 0 <= float(row[2]) <= 1 for row in rows)
    shown = {Path(row[0]).name for row in rows}
    assert {"a\\tb.jpg", "new\\nline.jpg", "back\\\\slash.jpg", "=cmd.jpg"} <= shown
    assert {row[1] for row in rows} <= {"=cmd|calc", "tab\\there", "new\\nline"}
    got = _read_csv(tmp_path / "out.csv")
    assert got[0] == ["path", "class", "probability"] and len(got) == len(names) + 1
    assert {Path(row[0]).name for row in got[1:]} == set(names)  # absolute paths: none starts with = or -
    assert all(row[1] in ("'=cmd|calc", "tab\there", "new\nline") for row in got[1:])
    assert all(0 <= float(row[2]) <= 1 for row in got[1:])
    # the CSV is a manifest for the next predict: the paths come back exactly
    assert sorted(p.name for p in list_images([tmp_path / "out.csv"])) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out.csv"]  # no temporary file left


def test_predict_refuses_a_csv_it_cannot_write_before_labelling(head_run, tmp_path):
    make_image(tmp_path / "x.jpg", (200, 40, 40))
    (tmp_path / "adir").mkdir()
    for target, says in ((tmp_path / "missing" / "out.csv", "does not exist"), (tmp_path / "adir", "is a folder"),
                         (tmp_path / "x.jpg" / "out.csv", "is a file")):
        r = cli("predict", "--model", head_run, "--device", "cpu", tmp_path / "x.jpg", "--csv", target)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stdout == ""  # not one image labelled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "x.jpg"] and not any((tmp_path / "adir").iterdir())


def test_predict_that_fails_midway_leaves_the_old_csv_and_no_temporary_file(tmp_path):
    from pipeline.stages.predict import Config, write_rows

    out = tmp_path / "out.csv"
    out.write_text("old\n")

    def rows():
        yield 0, "a.jpg", "ants", 0.9, ""
        raise RuntimeError("decoder died")
    with pytest.raises(RuntimeError):
        write_rows(Config(model=tmp_path, images=("a.jpg",), csv=str(out)), "probability", rows())
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# --- 9: matplotlib mathtext, atomic_write -----------------------------------------------------

def test_dollar_signs_in_names_draw_as_text_and_a_failed_write_leaves_no_temp_file(hostile, tmp_path):
    from pipeline.core.files import atomic_write
    from pipeline.report import figures
    from pipeline.report.gallery import loss_caption

    _, _, out = hostile
    assert (out / "figures" / "confusion.png").stat().st_size > 0  # class names with $...$ on the axes
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    make_image(tmp_path / "data" / "cost_$5_$10.jpg", (200, 40, 40))
    p = {"path": "cost_$5_$10.jpg", "true": 0, "pred": 1, "score": 0.9, "loss": 2.3}
    made = figures.image_grid([(p, loss_caption(p, ["$x$", "$\\frac{"], "probability"))], tmp_path / "data",
                              "$\\undefined$ title", tmp_path / "grid.png")
    assert made is not None and made.stat().st_size > 0
    (tmp_path / "keep.png").write_bytes(b"old")

    def broken(fh):
        fh.write(b"half")
        raise ValueError("mathtext")
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "keep.png", broken)
    assert (tmp_path / "keep.png").read_bytes() == b"old"
    assert not [q for q in tmp_path.iterdir() if ".tmp" in q.name]


# --- 12: stale figures ------------------------------------------------------------------------

def test_report_keeps_files_in_figures_it_did_not_write(hostile):
    _, _, out = hostile
    figs = out / "figures"
    assert (figs / "my_plot.png").read_bytes() == b"the user's own"
    listed = json.loads((figs / ".report-files.json").read_text())["files"]
    assert "confusion.png" in listed and "my_plot.png" not in listed
    assert sorted(p.name for p in figs.glob("*.png")) == sorted(listed + ["my_plot.png"])


def test_only_stale_figures_an_earlier_report_listed_are_removed(tmp_path):
    from pipeline.report.build import REPORT_FILES, remove_stale

    figs = tmp_path / "report" / "figures"
    figs.mkdir(parents=True)
    for name in ("old-run.png", "kept.png", "confusion-mine.png", "notes.txt"):
        (figs / name).write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(b"x")
    (figs / REPORT_FILES).write_text(json.dumps({"files": ["old-run.png", "kept.png", "../../outside.png",
                                                            "notes.txt", REPORT_FILES]}))
    assert remove_stale(figs, {"kept.png", "new.png"}) == ["old-run.png"]
    assert sorted(p.name for p in figs.iterdir()) == sorted([REPORT_FILES, "kept.png", "confusion-mine.png",
                                                             "notes.txt"])
    assert (tmp_path / "outside.png").exists()
    assert json.loads((figs / REPORT_FILES).read_text())["files"] == ["kept.png", "new.png"]
    (figs / REPORT_FILES).write_text("not json")  # a broken list removes nothing
    assert remove_stale(figs, set()) == [] and (figs / "kept.png").exists()


# --- 2: figures at 0% and 100% ----------------------------------------------------------------

def test_figures_draw_at_0_and_100_percent_for_every_n_up_to_400(tmp_path):
    from pipeline.report import compute_plot, figures, label_plot
    from pipeline.runs.metrics import wilson

    points = []
    for n in range(1, 401):
        for k in (0, n):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
            points.append({"label": "", "stage": "classify" if k else "finetune", "accuracy": k / n, "lo": lo,
                           "hi": hi, "seconds": float(n)})
    points[-1]["label"] = "all right"
    refs = [{"label": "published", "accuracy": 1.0}, {"label": "floor", "accuracy": 0.0}]
    assert compute_plot.accuracy_vs_compute(points, tmp_path / "acc.png", references=refs).stat().st_size > 0
    rows = [{"per_class": s, "mean": m, "accuracy": [m] * 3} for s in (1, 2, 5) for m in (0.0,)]
    curves = [{"name": "never", "rows": rows, "full": {"per_class": 10, "accuracy": 0.0}},
              {"name": "always", "rows": [{**r, "mean": 1.0, "accuracy": [1.0] * 3} for r in rows],
               "full": {"per_class": 10, "accuracy": 1.0}}]
    assert label_plot.label_efficiency(curves, tmp_path / "labels.png").stat().st_size > 0
    panels = [("all right", np.diag([5, 5]).tolist()), ("all wrong", [[0, 5], [5, 0]]), ("empty", [[0, 0], [0, 0]])]
    assert figures.confusion_grid(panels, ["a", "b"], tmp_path / "cm.png").stat().st_size > 0
