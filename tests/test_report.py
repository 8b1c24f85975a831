"""The report stage on synthetic run folders with known numbers: table, CSV, paired test and
summary, figures, HTML, and the one-line errors. CPU, a few seconds, no torch."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, cli, make_folder
from pipeline import UserError
from pipeline.report import choice, diagnostics, notes, verdict
from pipeline.report.rows import REFERENCES, table, table_rows
from pipeline.runs import metrics
from pipeline.stages import report
from pipeline.runs import folder as runfiles
from pipeline.runs import read as runread
from pipeline.codes.store import Header, SplitPiece, write_codes
from pipeline.core.files import write_json
from pipeline.runs.metrics import wilson

CLASSES = ["ants", "bees"]
PNG = b"\x89PNG\r\n\x1a\n"
# val: 10 ants then 10 bees, as make_folder lays them out
VAL = [f"val/{c}/img{i:03d}.jpg" for c in CLASSES for i in range(10)]
Y = [0] * 10 + [1] * 10


def fake_env():
    # runs.environment() names the GPU through torch; the report must not need it
    return {"cpu": "test-cpu", "cores": 2, "gpu": None, "python": "3", "torch": None}


def write_run(folder: Path, *, method, stage, pred, seconds, selection, dataset="hymenoptera_data",
              classes=CLASSES, shuffle=False, proba=False, paths=VAL, y=Y, **extra) -> Path:
    val = metrics.scores(y, pred, classes, proba=np.eye(len(classes))[pred] * 0.8 + 0.1 if proba else None)
    preds = runfiles.predictions(paths, y, pred, [0.9] * len(y), [0.1 + 2.2 * (p != t) for p, t in zip(pred, y)])
    if shuffle:  # the paired test must match images by path, not by position
        preds = [preds[i] for i in np.random.default_rng(1).permutation(len(preds))]
    subject = runfiles.Subject(method, extra.pop("short", None), stage, dataset, classes, "mobilenet_v2", "DEFAULT",
                               6, len(y), "cpu", 0)
    doc = runfiles.record(subject, val=val, selection=selection, seconds=seconds, preds=preds, **extra)
    return write_json(folder / "metrics.json", doc)


def write_features(path: Path, rng) -> Path:
    def split(n_per):
        labels = np.repeat([0, 1], n_per)
        codes = (rng.normal(size=(2 * n_per, 8)) + labels[:, None] * 3).astype(np.float32)
        paths = [f"x/{i}.jpg" for i in range(2 * n_per)]
        files = [SimpleNamespace(path=p, size=1, mtime_ns=1) for p in paths]
        return SplitPiece(2 * n_per, 8, files, [], iter([(codes, labels, paths)]))

    write_codes(path, Header(classes=CLASSES, dataset="hymenoptera_data", backbone="mobilenet_v2"),
                {"train": split(6), "val": split(10)})
    return path


def wrong_at(indices):
    pred = list(Y)
    for i in indices:
        pred[i] = 1 - pred[i]
    return pred


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Three runs (two heads on codes, one fine-tune with history and best_val) and their report."""
    tmp = tmp_path_factory.mktemp("report")
    data = make_folder(tmp / "hymenoptera_data", n_train=3, n_val=10)
    feats = write_features(tmp / "features.h5", np.random.default_rng(0))
    runs = tmp / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runfiles, "environment", fake_env)
        write_run(runs / "linsvc", method="mobilenet_v2 codes + LinearSVC", stage="classify", pred=list(Y),
                  seconds={"extract": 3.0, "fit": 0.25, "predict": 0.05}, selection="CV on train (5-fold)",
                  head="linsvc", data_root=str(data), features_file=str(feats), short="linsvc",
                  hyperparameters={"C": 0.1}, cv_score=0.975, command="python -m pipeline classify --features f.h5",
                  features_command="python -m pipeline features --data d")
        # wrong on ants 0-4: the LinearSVC gets all of those right -> McNemar b=5, c=0
        write_run(runs / "knn k=5", method="mobilenet_v2 codes + kNN", stage="classify", pred=wrong_at(range(5)),
                  seconds={"extract": 3.0, "fit": 0.01}, selection="CV on train (5-fold)", shuffle=True, proba=True,
                  head="knn", data_root=str(data), features_file=str(feats))
        best_pred = wrong_at(range(10, 14))
        history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.5 + 0.1 * e, "val_loss": 0.9 / e + 0.05 * e,
                    "val_acc": [0.55, 0.8, 0.6][e - 1], "lr": 0.001, "seconds": 3.0} for e in (1, 2, 3)]
        write_json(runs / "finetune-full" / "history.json", history)
        write_run(runs / "finetune-full", method="fine-tune (full)", stage="finetune", pred=wrong_at(range(10, 18)),
                  seconds={"decode": 1.5, "train": 10.0, "predict": 0.5}, selection="last epoch", mode="full",
                  hyperparameters={"epochs": 3, "lr": 0.001}, command="python -m pipeline finetune --epochs 3",
                  data_root=str(data), history="history.json",
                  best_val={"epoch": 2, **metrics.scores(Y, best_pred, CLASSES),
                            "selection": "best epoch on val (reference protocol)"})
    bench = write_json(tmp / "benchmarks.json", {
        "machine": {"cpu": "Test CPU 9000", "cores": 2, "gpu": None}, "commit": "abc1234", "versions": {"torch": "x"},
        "quick": True, "results": [{"name": "extract images/s", "ours": 120.5, "reference": 60.0, "unit": "img/s",
                                    "ratio": 2.008, "target": 2.0, "met": True, "note": "batch 32"}]})
    out = tmp / "out"
    written = report.run(report.Config(runs=runs, out=out, bench=bench, title="Test report", note="made by the tests"))
    return SimpleNamespace(tmp=tmp, runs=runs, out=out, data=data, written=written, loaded=runread.load_runs(runs))


def test_table_rows_exact_and_sorted(built):
    rows = table_rows(built.loaded)
    assert [r["method"] for r in rows] == [
        "mobilenet_v2 codes + LinearSVC", "mobilenet_v2 codes + kNN", "fine-tune (full)",
        "fine-tune (full), best epoch 2 on val (reference protocol)", *(ref.description for ref in REFERENCES)]
    assert [r["name"] for r in rows] == ["linsvc", "mobilenet_v2 codes + kNN", "fine-tune (full)",
                                         "fine-tune (full), best epoch 2", *(ref.name for ref in REFERENCES)]
    assert [r["kind"] for r in rows] == ["ours", "ours", "ours", "best_epoch", "reference", "reference"]
    assert [r["is_reference"] for r in rows] == [False] * 4 + [True] * 2
    headers, align, cells, same = table(rows)
    # backbone, counts and device are the same on every run of ours: a line above the table, not three columns
    assert same == "Every run: backbone / weights: mobilenet_v2 / DEFAULT; train / val images: 6 / 20; device: cpu."
    assert headers == ["Method", "Val accuracy [95% CI]", "Balanced acc.", "Macro F1", "Log-loss", "ECE",
                       "Chosen settings", "CV acc.", "Chosen by"] and len(align) == len(headers)
    # Wilson 95%: 20/20 -> [83.9, 100.0], 15/20 -> [53.1, 88.8], 12/20 -> [38.7, 78.1], 16/20 -> [58.4, 91.9]
    assert cells[0] == ["linsvc", "100.0% [83.9, 100.0]", "100.0%", "1.000", "—", "—", "C=0.1", "97.5%",
                        "CV on train (5-fold)"]
    assert cells[1][1:5] == ["75.0% [53.1, 88.8]", "75.0%", "0.733", f"{rows[1]['log_loss']:.3f}"]
    # the fine-tune is 90% sure of every image and right on 60%: ECE 0.3
    assert cells[2][1] == "60.0% [38.7, 78.1]" and cells[2][5:8] == ["0.300", "3 epochs, lr 0.001", "—"]
    assert cells[3][1] == "80.0% [58.4, 91.9]" and cells[3][6] == "epoch 2 of 3, lr 0.001"
    assert cells[3][8] == "best epoch on val"
    assert cells[4][1] == "96.73% [92.6, 98.6]" and cells[5][1] == "96.08% [91.7, 98.2]"


def test_a_column_that_varies_stays_in_the_table(built, tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    for name, backbone in (("a", "resnet18"), ("b", "resnet50")):
        write_run(tmp_path / name, method=name, stage="classify", pred=list(Y), seconds={"fit": 1.0}, selection="CV")
        doc = json.loads((tmp_path / name / "metrics.json").read_text())
        write_json(tmp_path / name / "metrics.json", doc | {"backbone": backbone})
    headers, _, cells, same = table(table_rows(runread.load_runs(tmp_path)))
    assert headers[1] == "Backbone / weights" and {c[1] for c in cells[:2]} == {"resnet18 / DEFAULT",
                                                                                "resnet50 / DEFAULT"}
    assert same == "Every run: train / val images: 6 / 20; device: cpu."


def test_csv_values(built):
    with open(built.out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert [r["is_reference"] for r in rows] == ["False"] * 4 + ["True"] * 2
    svc, knn, ft, ft_best = rows[:4]
    assert (svc["run"], svc["accuracy"], svc["correct"], svc["n_val"]) == ("linsvc", "1.0", "20", "20")
    assert float(knn["accuracy"]) == 0.75 and knn["run"] == "knn-k-5"
    lo, hi = wilson(15, 20)
    assert float(knn["accuracy_ci95_lo"]) == pytest.approx(lo) and float(knn["accuracy_ci95_hi"]) == pytest.approx(hi)
    assert (svc["extract_s"], svc["fit_s"], svc["train_s"], svc["predict_s"], svc["total_s"]) == (
        "3.0",
        "0.25",
        "",
        "0.05",
        "3.3",
    )
    # a fine-tune's predict pass is its last epoch's val phase, already inside train: not added twice
    assert (ft["extract_s"], ft["fit_s"], ft["train_s"], ft["total_s"]) == ("", "", "11.5", "11.5")
    assert svc["log_loss"] == "" and float(knn["log_loss"]) > 0
    assert (ft_best["kind"], ft_best["epoch"], ft_best["accuracy"]) == ("best_epoch", "2", "0.8")
    assert (
        rows[4]["accuracy"] == "0.9673" and rows[4]["correct"] == "148" and rows[4]["selection"] == "best epoch on val"
    )


def test_mcnemar_matched_by_path_and_summary_within_noise(built):
    by = {r.slug: r for r in built.loaded}
    t = choice.paired_test(by["linsvc"], by["knn-k-5"])  # kNN's predictions are stored shuffled
    assert (t["only_a"], t["only_b"], t["n"], t["unmatched"]) == (5, 0, 20, 0)
    assert t["p_value"] == pytest.approx(2 * 0.5 ** 5)  # 0.0625
    text = "\n".join(verdict.summary_paragraphs(table_rows(built.loaded), built.loaded))
    assert "Best on val: **linsvc**" in text
    assert "5 val images apart" in text and "p = 0.0625" in text
    assert "within noise" in text
    assert ("Choosing the epoch on val would report +20.0 points over the last epoch for **fine-tune (full)**."
            in notes.protocol_note(table_rows(built.loaded)))


def test_summary_says_real_difference_when_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    paths = [f"val/a/{i}.jpg" for i in range(40)]
    y = [0] * 20 + [1] * 20
    write_run(tmp_path / "good", method="good", stage="classify", pred=y, seconds={"fit": 1.0}, selection="CV",
              dataset="toy", paths=paths, y=y)
    write_run(tmp_path / "bad", method="bad", stage="classify", pred=[0] * 40, seconds={"fit": 0.5}, selection="CV",
              dataset="toy", paths=paths, y=y)
    runs = runread.load_runs(tmp_path)
    rows = table_rows(runs)
    assert not any(r["is_reference"] for r in rows)  # published hymenoptera numbers only beside hymenoptera runs
    text = " ".join(verdict.summary_paragraphs(rows, runs))
    assert "20 val images apart" in text and "unlikely to be noise" in text and "within noise" not in text


def test_figures_written_and_valid_png(built):
    names = sorted(p.name for p in (built.out / "figures").glob("*.png"))
    # one confusion figure for all methods; top losses of the recommended method, which is also the best
    assert names == sorted(["accuracy-vs-compute.png", "confusion.png", "losses-linsvc.png", "curves-finetune-full.png",
                            "pca-knn-k-5.png"])  # PCA: first classify run by path
    for n in names:
        f = built.out / "figures" / n
        assert f.read_bytes()[:8] == PNG
        with Image.open(f) as im:
            im.verify()
    md = (built.out / "report.md").read_text()
    for n in names:
        assert f"](figures/{n})" in md


def test_report_removes_the_figures_it_no_longer_shows(built, tmp_path):
    out = tmp_path / "again"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "confusion-old-run.png").write_bytes(PNG)  # an earlier report's, listed in its manifest
    (out / "figures" / "my_plot.png").write_bytes(PNG)  # the user's: never listed, never removed
    (out / "figures" / ".report-files.json").write_text(json.dumps({"files": ["confusion-old-run.png"]}))
    (out / "figures" / "notes.txt").write_text("kept: not a figure")
    report.run(report.Config(runs=built.runs, out=out, bench=tmp_path / "none.json"))
    left = sorted(p.name for p in (out / "figures").iterdir())
    assert "confusion-old-run.png" not in left and "notes.txt" in left and "confusion.png" in left
    assert "my_plot.png" in left


def test_top_losses_highest_loss_first_and_older_runs_fall_back_to_mistakes():
    from pipeline.report.diagnostics import top_losses

    preds = [{"path": f"{i:02d}", "true": 0, "pred": int(i % 7 == 0), "score": 0.5 + i / 100, "loss": i % 10}
             for i in range(40)]
    run = SimpleNamespace(m={"predictions": preds})
    top = top_losses(run, n=5)
    assert [(p["path"], p["loss"]) for p in top] == [("09", 9), ("19", 9), ("29", 9), ("39", 9), ("08", 8)]
    legacy = SimpleNamespace(m={"predictions": [{k: v for k, v in p.items() if k != "loss"} for p in preds]})
    assert [p["path"] for p in top_losses(legacy, n=10)] == ["35", "28", "21", "14", "07", "00"]  # confident first


def test_per_class_always_wrong_and_commands(built):
    md = (built.out / "report.md").read_text()
    # per class: kNN is wrong on ants 0-4 -> ants recall 5/10, bees precision 10/15
    assert "| mobilenet_v2 codes + kNN | 1.000 / 0.500 / 0.667 | 0.667 / 1.000 / 0.800 |" in md
    names, wrong = diagnostics.always_wrong(built.loaded, table_rows(built.loaded))
    assert names == ["linsvc", "mobilenet_v2 codes + kNN", "fine-tune (full)"] and wrong == []  # LinearSVC: no mistake
    assert "No val image is misclassified by all 3 methods." in md
    assert "| codes for linsvc | `cnncodes features --data d` |" in md
    assert "| linsvc | `cnncodes classify --features f.h5` |" in md
    with open(built.out / "per_class.csv", newline="") as fh:
        per = list(csv.DictReader(fh))
    knn_ants = next(r for r in per if r["run"] == "knn-k-5" and r["class"] == "ants")
    assert (float(knn_ants["recall"]), int(knn_ants["support"])) == (0.5, 10)


def test_markdown_and_html_content(built):
    md = (built.out / "report.md").read_text()
    # the verdict comes first, right under the title: kNN is within noise (p = 0.0625) and cheaper, but
    # not by COST_RATIO, and neither gives probabilities, so the more accurate LinearSVC is the one to use
    assert md.startswith("# Test report\n\n**Use linsvc** (mobilenet_v2 codes + LinearSVC): 100.0% (20 of 20)")
    assert ("the best on val, at 3.30 s of compute. Why this one: of the 2 methods these val images cannot tell "
            "apart, it is the most accurate on val.") in md
    assert "Dataset **hymenoptera_data**" in md and "made by the tests" in md
    assert "| ★ linsvc | 100.0% [83.9, 100.0] | best on val | 3.30 |" in md  # the main table, recommended starred
    assert "| linsvc | 100.0% [83.9, 100.0] | 100.0% | 1.000 | — | — | C=0.1 | 97.5% | CV on train (5-fold) |" in md
    assert "| tutorial: full FT (published) | 96.73% [92.6, 98.6] |" in md
    assert "| linsvc | mobilenet_v2 codes + LinearSVC |" in md  # the legend gives each short name's description
    for section in ("## What the numbers say", "## Per class and most confused", "## What went wrong",
                    "## How to reproduce"):
        assert section in md
    # the developer benchmarks are a page of their own, linked from the report
    assert "## Benchmarks" not in md and "Test CPU 9000" not in md and "[Benchmarks of this code](benchmarks.md)" in md
    bench = (built.out / "benchmarks.md").read_text()
    assert "Test CPU 9000" in bench and "| extract images/s | 120.5 | 60 | img/s | 2.01× | 2 | yes |" in bench
    assert "(report.md)" in bench and 'href="report.html"' in (built.out / "benchmarks.html").read_text()
    page = (built.out / "report.html").read_text()
    n_fig = len(list((built.out / "figures").glob("*.png")))
    assert page.count('src="data:image/png;base64,') == n_fig
    assert 'src="figures/' not in page  # self-contained
    assert '<tr class="reference">' in page and '<tr class="best-epoch">' in page
    assert "<strong>Use linsvc</strong>" in page and "<code>cnncodes features --data d</code>" in page
    assert '<tr class="recommended">' in page and 'href="benchmarks.html"' in page


def test_missing_images_and_features_skip_with_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    write_run(tmp_path / "runs" / "a", method="a", stage="classify", pred=list(Y), seconds={"fit": 1.0}, selection="CV",
              data_root=str(tmp_path / "gone"), features_file=str(tmp_path / "gone.h5"))
    report.run(report.Config(runs=tmp_path / "runs", out=tmp_path / "out", bench=tmp_path / "none.json"))
    note = capsys.readouterr().out
    assert "skipping its top losses" in note and "skipping the PCA figure" in note
    assert sorted(p.name for p in (tmp_path / "out" / "figures").glob("*.png")) == [
        "accuracy-vs-compute.png",
        "confusion.png",
    ]
    assert "## Benchmarks" not in (tmp_path / "out" / "report.md").read_text()


def test_mixed_datasets_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    write_run(tmp_path / "a", method="a", stage="classify", pred=list(Y), seconds={}, selection="CV")
    write_run(tmp_path / "b", method="b", stage="classify", pred=list(Y), seconds={}, selection="CV", dataset="flowers")
    with pytest.raises(UserError, match="different datasets") as e:
        runread.check_one_dataset(runread.load_runs(tmp_path))
    assert "'hymenoptera_data'" in str(e.value) and "'flowers'" in str(e.value)


def test_same_dataset_other_classes_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    write_run(tmp_path / "a", method="a", stage="classify", pred=list(Y), seconds={}, selection="CV")
    write_run(
        tmp_path / "b",
        method="b",
        stage="classify",
        pred=list(Y),
        seconds={},
        selection="CV",
        classes=["ants", "wasps"],
    )
    with pytest.raises(UserError, match="different class lists"):
        runread.check_one_dataset(runread.load_runs(tmp_path))


def test_empty_or_bad_runs_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no metrics.json"):
        runread.load_runs(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        runread.load_runs(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.json").write_text(json.dumps({"schema": "other/1"}))
    with pytest.raises(UserError, match="schema"):
        runread.load_runs(tmp_path)


def test_cli_empty_runs_exits_2_with_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("report", "--runs", tmp_path / "empty", "--out", tmp_path / "out")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "no metrics.json" in r.stderr
    assert not (tmp_path / "out").exists()


def test_cli_report_never_imports_torch(built, tmp_path):
    code = ("import sys; from pipeline.__main__ import main; "
            f"rc = main(['report', '--runs', {str(built.runs)!r}, '--out', {str(tmp_path / 'o')!r}, '--bench', '']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'report imported torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "report.html").is_file()


def test_verdict_recommends_a_method_within_noise_that_costs_under_half_and_names_its_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    write_run(tmp_path / "ft", method="full fine-tuning", short="full FT", stage="finetune", pred=list(Y),
              seconds={"train": 200.0}, selection="last epoch")
    write_run(tmp_path / "sm", method="codes + softmax", short="softmax", stage="classify", pred=wrong_at([0]),
              seconds={"extract": 4.0, "fit": 1.0}, selection="CV", score_kind="probability")
    write_run(tmp_path / "bad", method="bad", short="bad", stage="classify", pred=[0] * 20, seconds={"fit": 0.1},
              selection="CV")
    runs = runread.load_runs(tmp_path)
    rows = table_rows(runs)
    rec, best, tied, why = choice.recommend(rows, runs)
    assert (rec["name"], best["name"], [t["name"] for t in tied]) == ("softmax", "full FT", ["softmax"])
    text = verdict.verdict(rows, runs)
    assert text.startswith(
        "**Use softmax** (codes + softmax): 95.0% (19 of 20), 95% interval [76.4, 99.1], at 5.00 s of compute. On "
        "these 20 val images it cannot be told apart from the best, **full FT** (100.0%; 1 image only the best gets "
        "right, 0 only this one; exact McNemar p = 1, Holm-corrected 1). Why this one: of the 2 methods these val "
        "images cannot tell apart, it is among the cheapest (within 2× of the least compute, 5.00 s; 1 method costing "
        "more drops: a smaller difference is timing noise). These 20 val images cannot tell **full FT** and "
        "**softmax** apart; with 27.5% of the images right for one of the two only")
    assert why == ["it is among the cheapest (within 2× of the least compute, 5.00 s; 1 method costing more drops: a "
                   "smaller difference is timing noise)"]
    assert "Val both chose the winner among 3 methods" in text
    # the run folder to pass on, as the report was given it
    folder = (tmp_path / "sm").as_posix()
    assert text.endswith(f"for `cnncodes predict --model` and `cnncodes export --model`: `{folder}`.")


def test_frozen_runs_are_told_apart_by_their_batchnorm(tmp_path, monkeypatch):
    monkeypatch.setattr(runfiles, "environment", fake_env)
    for name, trunk in (("frozen, BN eval", "eval"), ("frozen, BN train (tutorial loop)", "train")):
        write_run(tmp_path / trunk, method=name, short=name, stage="finetune", pred=list(Y), seconds={"train": 1.0},
                  selection="last epoch", mode="frozen", hyperparameters={"trunk_mode": trunk, "epochs": 2})
    note = verdict.frozen_note(runread.load_runs(tmp_path))
    assert "**frozen, BN eval** keeps the trunk's BatchNorm in eval mode" in note
    assert note.endswith("The tutorial's published frozen number is comparable to "
                         "**frozen, BN train (tutorial loop)**.")


def test_acting_on_the_audit_is_paired_with_the_run_on_every_image(tmp_path, monkeypatch):
    """A head re-run with --exclude (its run named -excluded) is compared with its run on every image
    on the same val images, and the recommendation is made on each set of runs."""
    from pipeline.report.your_data import exclusion_effect

    monkeypatch.setattr(runfiles, "environment", fake_env)
    paths = [f"val/a/{i}.jpg" for i in range(40)]
    y = [0] * 20 + [1] * 20
    leaky = list(y)  # on every image k-NN scores its leaked copies: all right
    clean = [1 - t if i < 8 else t for i, t in enumerate(y)]  # without them 8 images go wrong, all one way
    for name, pred, secs in (("knn", leaky, 1.0), ("knn-excluded", clean, 1.0), ("softmax", wrong_y(y, 3), 1.0)):
        write_run(tmp_path / "runs" / name, method=name.split("-")[0], stage="classify", pred=pred,
                  seconds={"fit": secs}, selection="CV", dataset="toy", paths=paths, y=y,
                  hyperparameters={"n_neighbors": 9 if "excluded" in name else 3},
                  **({"inputs": {"exclude": ["train/a/1.jpg", "train/a/2.jpg"]}} if "excluded" in name else {}))
    runs = runread.load_runs(tmp_path / "runs")
    rows = table_rows(runs)
    blocks = exclusion_effect(rows, runs)
    [table] = [b.content for b in blocks if b.kind == "table"]
    [cells] = table.rows
    assert cells[1] == "2" and cells[2] == "k=3 → k=9" and cells[5] == "-20.0 points"
    assert cells[6].startswith("8 / 0 of 40, p = 0.0078")
    words = next(b.content for b in blocks if b.kind == "p")
    assert "changes" in words and "**knn** (100.0%)" in words and "**softmax** (92.5%)" in words
    assert exclusion_effect([r for r in rows if r["run"] != "knn-excluded"], runs) == []


def wrong_y(y, k):
    return [1 - t if i < k else t for i, t in enumerate(y)]


def test_repeats_are_recorded_apart_and_not_part_of_a_methods_compute():
    from pipeline.report.rows import split_seconds

    head = split_seconds({"extract": 6.0, "fit": 2.0, "predict": 0.1, "repeats": 40.0}, "classify")
    assert head["total_s"] == pytest.approx(8.1) and head["fit_s"] == 2.0
    ft = split_seconds({"train": 100.0, "tune": 300.0, "predict": 1.0, "repeats": 500.0}, "finetune")
    assert ft["total_s"] == pytest.approx(400.0) and ft["train_s"] == pytest.approx(400.0)  # tuning is its cost
