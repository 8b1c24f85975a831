"""The report page opens on the decision: the verdict, the main table with the recommended row
highlighted and the accuracy-vs-compute figure come before any other section, in report.html and
report.md alike; every figure is shown at the page's width with no text under 10 px; the commands
reproduce every row; calibration and the cost to use come from what the runs recorded. The HTML is
parsed with the standard library; where chromium is installed it is also laid out at 1280 px."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.report import compute_plot, figures, quality, usage
from pipeline.report.render import PAGE_PX
from pipeline.report.reproduce import cnncodes_command, project_path, with_views
from pipeline.runs import folder as runfiles
from pipeline.runs import read as runread
from pipeline.stages import report
from conftest import ROOT
from test_report import Y, fake_env, wrong_at, write_run

H5 = f"{ROOT}/features/h/m.h5"  # runs made in this project, with absolute paths
FEATURES = f"{ROOT}/.venv/bin/python -m pipeline features --data data/hymenoptera_data --out {H5}"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Four runs: two heads on plain codes, the same heads on 4 views with 2 test-time views, all from
    one codes file whose recorded command has no --views. LinearSVC is the best, softmax (one image
    behind, much cheaper) the recommended."""
    tmp = tmp_path_factory.mktemp("page")
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runfiles, "environment", fake_env)
        for head, kind, k, t, pred in (("softmax", "probability", 0, 1, wrong_at([0])), ("linsvc", "margin", 0, 1, Y),
                                       ("softmax", "probability", 4, 2, wrong_at([1, 2])),
                                       ("linsvc", "margin", 4, 2, wrong_at([1, 2]))):
            name = head + (f" (+{k} views, TTA {t})" if k else "")
            extract = 6.5 if not k else 20.0  # the best (linsvc) costs 10 s more to fit: softmax is recommended
            write_run(runs / name.replace(" ", "_"), method=f"codes + {head}", short=name, stage="classify", pred=pred,
                      seconds={"extract": extract, "fit": 1.0 if head == "softmax" else 11.0, "predict": 0.02},
                      selection="CV on train (5-fold)",
                      score_kind=kind, views=k, tta=t, head=head, features_file=H5, features_command=FEATURES,
                      command=f"python -m pipeline classify --features {H5}" + (f" --views {k} --tta {t}" if k else ""))
    out = tmp / "out"
    report.run(report.Config(runs=runs, out=out, bench=tmp / "none.json"))
    return SimpleNamespace(out=out, md=(out / "report.md").read_text(), html=(out / "report.html").read_text(),
                           runs=runread.load_runs(runs))


class Outline(HTMLParser):
    """The page's landmarks in document order, and every image with its attributes."""

    def __init__(self):
        super().__init__()
        self.events, self.images, self.section = [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and a.get("id") == "decision":
            self.events.append("decision-start")
        elif tag == "details" and "section" in (a.get("class") or ""):
            self.events.append("section")
        elif tag == "nav":
            self.events.append("toc")
        elif tag == "p" and a.get("class") == "verdict":
            self.events.append("verdict")
        elif tag == "tr" and a.get("class") == "recommended":
            self.events.append("recommended-row")
        elif tag == "figure":
            self.events.append(a.get("id"))
        elif tag == "img":
            self.images.append(a)


def test_html_opens_on_the_decision_and_shows_every_figure_at_page_width(page):
    o = Outline()
    o.feed(page.html)
    first_other = min(o.events.index(e) for e in ("section", "toc"))
    decision = o.events[:first_other]
    assert decision[0] == "decision-start" and decision.index("verdict") < decision.index("recommended-row") \
        < decision.index("fig-accuracy-vs-compute")
    assert o.events.count("recommended-row") == 1 and o.events.count("section") >= 5
    assert re.search(rf"max-width: {PAGE_PX}px", page.html)
    css = re.search(r"figure img \{([^}]*)\}", page.html).group(1)
    assert "width: 100%" in css.replace("max-width", "")  # every figure is shown at the content width
    for img in o.images:
        assert not {"width", "height", "style"} & set(img), img  # nothing shrinks an image below that


def test_markdown_keeps_the_order(page):
    md = page.md
    first_section = md.index("\n## ")
    verdict, table, figure = md.index("**Use "), md.index("| ★ "), md.index("![accuracy-vs-compute]")
    assert md.startswith("# ") and verdict < table < figure < md.index("Contents: [") < first_section
    assert md.count("| ★ ") == 1  # the published rows sit in their own small table, under the main one
    assert figure < md.index("### Best epoch on val and published numbers") < md.index("Contents: [")
    assert "<details" not in md and "<" not in md.replace("\\<", "")  # no raw HTML in report.md


def test_figures_legible_at_the_size_shown(page):
    shown = {p.name for p in (page.out / "figures").glob("*.png")}
    assert {"accuracy-vs-compute.png", "confusion.png", "calibration.png"} <= shown
    for name in shown:
        assert figures.SHOWN_TEXT_PX[name] >= figures.MIN_TEXT_PX, name


def test_points_at_one_spot_get_their_own_labels():
    pts = [{"label": n, "stage": "classify", "accuracy": a, "lo": a - 0.05, "hi": a + 0.03, "seconds": s}
           for n, a, s in (("knn", 0.941, 5.84), ("linsvc", 0.954, 5.92), ("softmax", 0.961, 6.88),
                           ("softmax (+25 views, TTA 5)", 0.948, 66.6), ("linsvc (+25 views, TTA 5)", 0.948, 66.6),
                           ("full FT", 0.935, 299.0))]
    xs = compute_plot.spread(pts)
    assert xs[3] != xs[4] and abs(np.log10(xs[3] / xs[4])) < 0.05  # apart, but still at their compute
    assert [p["label"] for p in compute_plot.pareto_front(pts)] == ["knn", "linsvc", "softmax"]
    fig, boxes = compute_plot.draw(pts, "softmax")
    assert len(boxes) == len(pts)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert compute_plot._overlap(a, b) == 0


def test_commands_reproduce_every_row(page):
    lines = re.findall(r"`(cnncodes [^`]+)`", page.md)
    features = [c for c in lines if c.startswith("cnncodes features")]
    assert features == ["cnncodes features --data data/hymenoptera_data --out features/h/m.h5 --views 4 --tta 2"]
    assert "cnncodes classify --features features/h/m.h5 --views 4 --tta 2" in lines
    # classify uses every view the file holds unless told: the heads on plain codes say so
    assert "cnncodes classify --features features/h/m.h5 --views 0 --tta 1" in lines
    listed = re.findall(r"\| `([^`]+)` \|", page.md)
    assert len(listed) == 3 and all(c.startswith("cnncodes ") for c in listed) and f"{ROOT}/" not in page.md


def test_paths_written_as_the_projects_user_types_them(tmp_path):
    root = tmp_path / "proj"
    assert project_path(str(root / "features" / "a.h5"), root) == "features/a.h5"
    # outside the project: as given, never guessed into the project's own folders (data/x downloads)
    assert project_path("/srv/x/cnncodes/reports/runs", root) == "/srv/x/cnncodes/reports/runs"
    assert project_path("/work/shared/data/hymenoptera_data", root) == "/work/shared/data/hymenoptera_data"
    assert project_path("/data/images", root) == "/data/images"
    assert project_path("/root/stuff/x.h5", root, home="/root") == "~/stuff/x.h5"  # never this machine's home
    assert cnncodes_command("python3 -m pipeline report --runs=/a/b/c/reports/runs", root) == \
        "cnncodes report --runs=/a/b/c/reports/runs"
    # ~ stays where a shell expands it: at a word's start, outside the quotes
    assert cnncodes_command(f"python -m pipeline features --data='/root/my photos' --out {root}/f.h5", root, "/root") \
        == "cnncodes features --data ~/'my photos' --out f.h5"
    assert with_views("cnncodes features --views 2", 4, 5) == "cnncodes features --views 4 --tta 5"
    assert with_views("cnncodes classify --x y", 4, 5) == "cnncodes classify --x y"
    assert with_views("cnncodes classify --views=9", 0, 1, exact=True) == "cnncodes classify --views 0 --tta 1"


def test_calibration_and_cost_to_use(page):
    by = {r.m["short"]: r for r in page.runs}
    cal = quality.reliability(by["softmax"])  # 0.9 sure of each of 20 images, right on 19: ECE |0.95 - 0.9|
    assert cal["ece"] == pytest.approx(0.05) and [b["n"] for b in cal["bins"]] == [20]
    assert quality.ece(by["linsvc"]) is None and "none: margins" in page.md
    # a head: the backbone pass per image (6.5 s over 6 + 20 images) times T, plus its own predict time
    assert usage.ms_per_image(by["softmax"], page.runs) == pytest.approx(1000 * (6.5 / 26 + 0.02 / 20))
    tta = by["softmax (+4 views, TTA 2)"]
    assert usage.ms_per_image(tta, page.runs) == pytest.approx(1000 * (2 * 6.5 / 26 + 0.02 / 20))
    assert "(2 views)" in page.md and "Top-5" not in page.md  # two classes: no top-5 column
    assert "Can its confidence be trusted" in page.md and "gives margins, not probabilities" in page.md
    assert quality.most_confused([[[9, 1], [3, 7]], [[10, 0], [1, 9]]]) == [(1, 0, [3, 1]), (0, 1, [1, 0])]


def _layout(html: Path, tmp: Path) -> dict:
    """Lay the page out in headless chromium at 1280 px and measure it (every details opened)."""
    probe = tmp / "probe.html"
    script = ("<script>window.addEventListener('load', function () {"
              "var d = document.getElementById('decision').getBoundingClientRect();"
              "document.querySelectorAll('details').forEach(function (x) { x.open = true; });"
              "var b = getComputedStyle(document.body), w = document.body.clientWidth - parseFloat(b.paddingLeft)"
              " - parseFloat(b.paddingRight);"
              "var imgs = Array.from(document.images).map(function (i) { return i.getBoundingClientRect().width; });"
              "var pre = document.createElement('pre'); pre.id = 'measured';"
              "pre.textContent = JSON.stringify({decision: d.bottom, content: w, images: imgs});"
              "document.body.appendChild(pre); });</script>")
    probe.write_text(html.read_text().replace("</body>", script + "</body>"))
    exe = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))))
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                        "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                       capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="measured">(.*?)</pre>', r.stdout, re.S)
    if not found:
        pytest.skip(f"chromium did not lay the page out: {r.stderr[-300:]}")
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(not any(map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                    reason="no chromium to lay the page out")
def test_chromium_decision_within_a_screen_and_a_half_and_images_at_page_width(page, tmp_path):
    m = _layout(page.out / "report.html", tmp_path)
    assert m["decision"] <= 1500 and m["content"] == pytest.approx(PAGE_PX, abs=1)
    assert m["images"] and all(w >= m["content"] - 1 for w in m["images"]), m


def test_many_classes_show_top5_and_mean_per_class_recall(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    classes = [f"c{i}" for i in range(6)]
    y = [i % 6 for i in range(24)]
    paths = [f"val/c{t}/{i}.jpg" for i, t in enumerate(y)]
    for name, pred in (("a", y), ("b", [(t + (i % 4 == 0)) % 6 for i, t in enumerate(y)])):
        f = write_run(tmp_path / "runs" / name, method=name, stage="classify", pred=pred, seconds={"fit": 1.0},
                      selection="CV", dataset="six", classes=classes, paths=paths, y=y)
        doc = json.loads(f.read_text())
        doc["val"]["top5_accuracy"] = 1.0 if name == "a" else 0.95
        f.write_text(json.dumps(doc))
    report.run(report.Config(runs=tmp_path / "runs", out=tmp_path / "out", bench=tmp_path / "none.json"))
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| Mean per-class recall | Top-5 acc. |" in md and "| 95.0% |" in md


def test_a_frozen_fine_tune_scored_from_codes_pays_the_backbone_pass_per_image(tmp_path):
    """The fast and cached-views loops score a frozen trunk's val from codes made once: their val pass is
    the new layer alone, so the cost to use adds the backbone pass a head on the same codes pays."""
    from pipeline.runs.read import Run

    model = {"backbone": "mobilenet_v2", "weights": "DEFAULT"}
    head = Run(tmp_path, "softmax", {"stage": "classify", **model, "n_train": 6, "n_val": 20,
                                     "seconds": {"extract": 6.5, "predict": 0.02}}, None)
    frozen = {"stage": "finetune", "mode": "frozen", **model, "n_train": 6, "n_val": 20,
              "seconds": {"predict": 0.004}}
    fast, ref = (Run(tmp_path, k, {**frozen, "loop": k}, None) for k in ("fast", "reference"))
    assert usage.ms_per_image(fast, [head, fast]) == pytest.approx(1000 * (6.5 / 26 + 0.004 / 20))
    assert usage.ms_per_image(ref, [head, ref]) == pytest.approx(1000 * 0.004 / 20)  # the whole model ran
    assert usage.ms_per_image(fast, [fast]) is None  # no way to know the backbone pass: not recorded
