"""cnncodes sweep: several backbones' codes, their heads, one report and verdict across backbone x head;
the line-up parsed, images compared only where every backbone coded them, and screening's test."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from conftest import make_folder
from pipeline import UserError
from pipeline.codes.lineup import Entry, parse_lineup
from pipeline.runs import screen


def test_lineup_parses_name_weights_pairs_and_refuses_repeats():
    assert parse_lineup("resnet18=none, timm/test_resnet") == (Entry("resnet18", "none"),
                                                             Entry("timm/test_resnet", "DEFAULT"))
    for bad in ("", "resnet18=none resnet18=none", "=none"):
        with pytest.raises(UserError):
            parse_lineup(bad)


def test_screen_drops_only_what_the_sample_separates_as_worse():
    n = 60
    good = {f"v{i}": True for i in range(n)}
    close = {f"v{i}": i != 3 for i in range(n)}  # one image apart: within noise
    bad = {f"v{i}": i % 2 == 0 for i in range(n)}  # 30 worse: separable
    d = screen.decide({"a": close, "b": good, "c": bad})
    assert d["b"]["best"] and not d["b"]["dropped"]
    assert not d["a"]["dropped"] and d["c"]["dropped"] and d["c"]["p_holm"] < screen.ALPHA
    assert screen.auto_size(-1, 500, 3) == 0 and screen.auto_size(-1, 5000, 3) == screen.AUTO_N
    assert screen.auto_size(-1, 5000, 1) == 0 and screen.auto_size(40, 10, 2) == 40


def test_sample_is_stratified_and_the_same_every_time(tmp_path):
    from pipeline.images.scan import scan

    s = scan(make_folder(tmp_path / "d", n_train=10, n_val=6), ("auto",))
    a, b = screen.sample(s, 8, "train", "val", 0), screen.sample(s, 8, "train", "val", 0)
    assert [r.path for r in a.splits["train"].items] == [r.path for r in b.splits["train"].items]
    labels = [r.label for r in a.splits["train"].items]
    assert len(labels) == 8 and labels.count(0) == labels.count(1) == 4
    assert len(a.splits["val"].items) == 8 and set(a.splits) == {"train", "val"}


def test_sweep_compares_every_backbone_and_head_on_the_same_images_and_plain_codes(tmp_path, monkeypatch, capsys):
    from pipeline.__main__ import main
    from pipeline.codes.store import read_attrs
    from pipeline.stages.sweep import Config, sweep

    data = make_folder(tmp_path / "data", n_train=8, n_val=5)
    monkeypatch.chdir(tmp_path)
    # one backbone's cached file already holds augmented views and test-time views (`features --views`):
    # the sweep must still fit and score its heads on the plain codes, as it does the other backbone's
    viewed = tmp_path / "features" / "data" / "timm_test_resnet-none.h5"
    assert main(["features", "--data", str(data), "--backbone", "timm/test_resnet", "--weights", "none", "--out",
                 str(viewed), "--device", "cpu", "--workers", "0", "--views", "1", "--tta", "2"]) == 0
    assert read_attrs(viewed)["views"]
    cfg = Config(data=data, backbones="timm/test_efficientnet=none timm/test_resnet=none", head="softmax",
                 out=tmp_path / "runs", report=tmp_path / "report", device="cpu", workers=0, screen=4)
    record = sweep(cfg)
    assert [b["backbone"] for b in record["backbones"]] == ["timm/test_efficientnet", "timm/test_resnet"]
    assert record["backbones"][1]["features"] == str(viewed.relative_to(tmp_path))  # the file with views was swept
    assert all(b["parameters"] > 0 and b["ms_per_image"] > 0 for b in record["backbones"])
    runs = [json.loads(m.read_text()) for m in sorted((tmp_path / "runs").glob("*/metrics.json"))]
    assert len(runs) == 2 and all(m["views"] == 0 and m["tta"] == 1 for m in runs)
    verdict = json.loads((tmp_path / "report" / "verdict.json").read_text())
    assert verdict["use"]["backbone"].startswith("timm/test_") and verdict["use"]["head"] == "softmax"
    assert len(verdict["methods"]) == 2 and all(m["comparable"] for m in verdict["methods"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Which backbone" in report and "timm/test_resnet + softmax" in report and "+1 views" not in report
    # screening coded 4 + 4 images per backbone; 4 val images can separate nothing, so none is dropped
    assert record["screen"]["n"] == 4 and not any(d["dropped"] for d in record["screen"]["decisions"].values())
    assert "Screening coded a stratified sample of 4 train and 4 val images" in report
    # each backbone's codes audited into a folder of its own beside the report, and the report compares them
    audits = [tmp_path / b["audit"] for b in record["backbones"]]
    names = ("timm_test_efficientnet-none", "timm_test_resnet-none")
    assert audits == [tmp_path / "report" / "audit" / n for n in names]
    assert all((a / "audit.json").is_file() and (a / "label_issues.csv").is_file() for a in audits)
    assert "What each backbone's codes flag" in report and "Suspected label issues" in report
    # a run on views left in the runs folder by another command is named: the report would compare it too
    assert main(["classify", "--features", str(viewed), "--head", "softmax", "--out", str(tmp_path / "runs"),
                 "--label-curve", "off", "--folds", "2"]) == 0
    capsys.readouterr()
    # --no-audit: the same sweep again (codes and heads cached), no audit made, recorded or shown
    again = sweep(replace(cfg, audit=False, report=tmp_path / "report2", screen=0))
    assert "also holds 1 run on augmented or test-time views" in capsys.readouterr().out
    assert all(b["audit"] is None for b in again["backbones"]) and not (tmp_path / "report2" / "audit").exists()
    assert "What each backbone's codes flag" not in (tmp_path / "report2" / "report.md").read_text()


def test_a_sweep_without_audits_renders_without_their_part(tmp_path, monkeypatch):
    """An older sweep.json (no audit folders) or --no-audit: the backbone section, no audit part."""
    from pipeline.report.backbone_audits import audit_blocks
    from pipeline.report.backbones import backbone_blocks

    sweep = {"schema": "cnncodes-sweep/1", "left_out": [],
             "backbones": [{"backbone": "a", "label": "a (none)", "weights_id": "none", "parameters": 10,
                            "ms_per_image": 1.0, "dim": 4}]}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "sweep.json").write_text(json.dumps(sweep))
    assert audit_blocks(sweep, tmp_path / "fig") == []
    blocks = backbone_blocks(tmp_path / "runs", [], {"run": "x"}, tmp_path / "fig")
    assert blocks[0].content == "Which backbone" and not any("flag" in str(b.content) for b in blocks)


def _audit_folder(where, labels=(), outliers=(), pairs=()):
    """An audit folder as `cnncodes audit` writes it, with these findings (most suspect first)."""
    from pipeline.audit.findings import PAIR_COLUMNS, ROW_COLUMNS

    where.mkdir(parents=True)
    rows = lambda found: "".join(f"{p},{p.split('/')[0]},ants,bees,0.9\n" for p in found)  # noqa: E731
    (where / "label_issues.csv").write_text(",".join(ROW_COLUMNS) + "\n" + rows(labels))
    (where / "outliers.csv").write_text(",".join(ROW_COLUMNS) + "\n" + rows(outliers))
    (where / "duplicates.csv").write_text(",".join(PAIR_COLUMNS) + "\n" + "".join(
        f"{a},{a.split('/')[0]},{b},{b.split('/')[0]},0.99\n" for a, b in pairs))
    (where / "exclude.txt").write_text("")
    (where / "audit.json").write_text(json.dumps({"rules": {"duplicates": {"similarity": 0.95}}}))
    return where


def test_a_label_issue_only_one_backbone_flags_is_counted_as_its_own_and_drawn(tmp_path):
    from pipeline.report.backbone_audits import FIGURE, audit_blocks, audited, counts_table, ordered_images

    both, mine, gone = "train/ants/both.jpg", "val/bees/only_a.jpg", "train/ants/left_out.jpg"
    a = _audit_folder(tmp_path / "a", labels=[both, mine, gone], pairs=[("train/ants/x.jpg", "val/ants/y.jpg")])
    b = _audit_folder(tmp_path / "b", labels=[both], outliers=[mine], pairs=[("val/ants/y.jpg", "train/ants/x.jpg")])
    sweep = {"left_out": [gone], "backbones": [
        {"label": "A (none)", "audit": str(a)}, {"label": "B (none)", "audit": str(b)},
        {"label": "C (none)", "audit": None}]}
    flags, missing = audited(sweep)
    assert [f.label for f in flags] == ["A (none)", "B (none)"] and missing == []
    table = counts_table(flags)
    by_kind = {r[0]: r[1:] for r in table.rows}
    assert by_kind["Suspected label issues"] == ["2 (1 only here)", "1 (0 only here)"]  # the left-out image not counted
    assert by_kind["Outliers"] == ["0 (0 only here)", "1 (1 only here)"]
    assert by_kind["Leaks across splits (pairs)"] == ["1 (0 only here)", "1 (0 only here)"]  # one pair, either order
    order = ordered_images(flags)
    assert set(order[:4]) == {both, mine, "train/ants/x.jpg", "val/ants/y.jpg"} and gone not in order
    blocks = audit_blocks(sweep, tmp_path / "fig")
    assert any(b.kind == "figure" and b.content.name == FIGURE for b in blocks)
    from pipeline.report import figures

    assert figures.SHOWN_TEXT_PX[FIGURE] >= figures.MIN_TEXT_PX  # legible at the page's width
    [grid], [legend] = figures.LAYOUT[FIGURE]["axes"], figures.LAYOUT[FIGURE]["legends"]
    assert legend[3] <= grid["box"][1]  # the legend below the grid, not over its cells
    assert any("weakness" in str(b.content) for b in blocks)
    # a backbone that flags many images alone (a random one) cannot crowd another's lone finding out of the figure
    noisy = _audit_folder(tmp_path / "noisy", labels=[f"train/ants/n{i}.jpg" for i in range(60)])
    many, _ = audited({"left_out": [gone], "backbones": [{"label": "N (none)", "audit": str(noisy)},
                                                         {"label": "A (none)", "audit": str(a)}]})
    order = ordered_images(many)
    assert order[:2] == ["train/ants/n0.jpg", both] and len(order) == 64
    (b / "audit.json").unlink()  # a folder gone or half-written is said, never read as "nothing flagged"
    assert "B (none)" in str(audit_blocks(sweep, tmp_path / "fig2")[0].content)


def test_agreed_findings_cannot_fill_every_row_of_the_grid_when_lone_ones_exist(tmp_path):
    from pipeline.report.backbone_audits import SHOWN, audited, ordered_images, shown_images

    agreed = [f"train/ants/a{i}.jpg" for i in range(100)]  # thousands of crops: both backbones flag many
    a = _audit_folder(tmp_path / "a", labels=agreed + ["val/bees/only_a.jpg"])
    b = _audit_folder(tmp_path / "b", labels=agreed + [f"val/ants/b{i}.jpg" for i in range(50)])
    flags, _ = audited({"left_out": [], "backbones": [{"label": "A (none)", "audit": str(a)},
                                                      {"label": "B (none)", "audit": str(b)}]})
    images = ordered_images(flags)
    shown = shown_images(flags, images)
    assert len(shown) == SHOWN and "val/bees/only_a.jpg" in shown  # A's one lone finding is drawn
    assert sum(p in agreed for p in shown) == SHOWN // 2 and shown[:SHOWN // 2] == images[:SHOWN // 2]
    few = shown_images(flags, images[:10] + images[-3:])  # no more than fit: all of them, in order
    assert few == images[:10] + images[-3:]


def test_images_one_backbone_did_not_code_are_named_for_every_other(tmp_path):
    from conftest import write_synthetic_codes
    from pipeline.codes.lineup import coded_paths, not_in_all

    a = write_synthetic_codes(tmp_path / "a.h5", n_train=6, n_val=10)
    b = write_synthetic_codes(tmp_path / "b.h5", n_train=6, n_val=8)
    left = not_in_all([a, b], ["train", "val"])
    assert left[b] == [] and len(left[a]) == 2
    assert set(left[a]) == coded_paths(a, ["val"]) - coded_paths(b, ["val"])
    from pipeline.codes.store import read_split  # the paths alone, as the whole split holds them
    assert coded_paths(a, ["train", "val"]) == {p for s in ("train", "val") for p in read_split(a, s).paths}
