"""What a method costs to use: one warm, batched harness (core.timing) for a head's trunk
(features), its head (classify) and a fine-tuned network (finetune), recorded with each run."""
from __future__ import annotations

import json

import pytest

from conftest import make_folder
from pipeline.codes.store import Header, read_attrs
from pipeline.core import timing
from pipeline.stages import classify, features, finetune


def test_the_harness_warms_up_then_reports_the_median_call_per_image(monkeypatch):
    clock, calls = iter([0.0, 0.4, 1.0, 1.2, 2.0, 2.8, 3.0, 3.2, 4.0, 4.2]), []  # calls of 0.4, 0.2, 0.8, 0.2, 0.2 s
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    got = timing.measure(lambda: calls.append(1), batch=10, repeats=5, warmup=2, part="x")
    assert len(calls) == 7  # 2 untimed, 5 timed
    assert got["ms_per_image"] == pytest.approx(20.0) and got["low"] == pytest.approx(20.0)
    assert got["high"] == pytest.approx(80.0) and got["batch"] == 10 and got["repeats"] == 5
    assert got["part"] == "x" and "decoding and resizing excluded" in got["what"]


def test_the_plan_is_the_full_one_unless_the_quick_one_is_asked_for(monkeypatch):
    monkeypatch.delenv("CNNCODES_COST", raising=False)
    assert timing.plan() == (timing.BATCH, timing.WARMUP, timing.REPEATS) == (32, 2, 5)
    monkeypatch.setenv("CNNCODES_COST", "quick")
    assert timing.plan() == (4, 0, 1)


def test_every_run_records_its_cost_from_the_same_harness(tmp_path):
    """The features file holds its trunk's cost; a head's run carries it with its head's; two
    fine-tunes of the same network (another lr) are timed the same way, at the same crop."""
    data = make_folder(tmp_path / "data", n_train=6, n_val=4)
    feats, out = tmp_path / "f.h5", tmp_path / "runs"
    features.run(features.Config(data=data, weights="none", out=feats, device="cpu", workers=0, resize=40, crop=32))
    trunk = Header.from_attrs(read_attrs(feats)).cost
    assert trunk["part"] == "backbone" and trunk["crop"] == 32 and trunk["ms_per_image"] > 0
    classify.run(classify.Config(features=feats, head="softmax", out=out, label_curve="off", folds=2))
    [head_run] = [p for p in out.iterdir() if p.is_dir()]
    cost = json.loads((head_run / "metrics.json").read_text())["cost"]
    assert cost["trunk"] == trunk and cost["head"]["part"] == "head" and cost["head"]["ms_per_image"] > 0
    docs = [finetune.train(finetune.Config(data=data, out=tmp_path / f"ft{lr}", weights="none", epochs=1,
                                           batch_size=4, lr=lr, resize=40, crop=32, workers=0, device="cpu"))[1]
            for lr in (0.003, 0.01)]
    a, b = (d["cost"] for d in docs)
    assert a["part"] == b["part"] == "model" and a["crop"] == b["crop"] == 32 and a["precision"] == "fp32"
    assert {k: v for k, v in a.items() if k not in ("ms_per_image", "low", "high")} == \
        {k: v for k, v in b.items() if k not in ("ms_per_image", "low", "high")}


def _cost(part: str, ms: float, **kw) -> dict:
    return {"ms_per_image": ms, "low": ms, "high": ms, "batch": 32, "repeats": 5, "part": part, "crop": 224,
            "device": "cpu", "precision": "fp32", **kw}


def test_identical_models_show_identical_cost_and_heads_add_their_trunk_per_view(tmp_path):
    """Two fine-tunes of one network (the recipe's lr and a tuned one) timed 164 and 54 ms get one
    figure, the median; a head costs its trunk per test-time view plus its head; a run made before
    the harness is estimated as before and says so."""
    from pipeline.report import usage
    from pipeline.runs.read import Run

    def run(slug, **m):
        base = {"classes": ["a", "b"], "backbone": "mobilenet_v2", "n_train": 10, "n_val": 20}
        return Run(tmp_path / slug, slug, {**base, **m}, None)
    trunk = _cost("backbone", 10.0)
    runs = [run("ft", stage="finetune", mode="full", cost=_cost("model", 164.0)),
            run("ft-tuned", stage="finetune", mode="full", cost=_cost("model", 54.0)),
            run("frozen", stage="finetune", mode="frozen", cost=_cost("model", 60.0)),
            run("softmax", stage="classify", head="softmax", tta=1, cost={"trunk": trunk, "head": _cost("head", 0.5)}),
            run("softmax-tta", stage="classify", head="softmax", tta=3,
                cost={"trunk": trunk, "head": _cost("head", 0.7)}),
            run("old", stage="finetune", mode="full", seconds={"predict": 2.0})]
    use = usage.usage(runs)
    assert use["ft"]["ms_per_image"] == use["ft-tuned"]["ms_per_image"] == use["frozen"]["ms_per_image"] == 60.0
    assert use["softmax"]["ms_per_image"] == pytest.approx(10 + 0.6)  # one head pooled: the median of 0.5 and 0.7
    assert use["softmax-tta"]["ms_per_image"] == pytest.approx(3 * 10 + 0.6)
    assert use["old"]["ms_per_image"] == pytest.approx(100.0) and not use["old"]["ms_measured"]
    # a head on codes made before the harness (no trunk figure): estimated from its own passes, and said so
    old_codes = run("old-codes", stage="classify", head="softmax", tta=1, seconds={"extract": 2.6, "predict": 0.02},
                    cost={"trunk": None, "head": _cost("head", 0.5)})
    got = usage.usage([*runs, old_codes])["old-codes"]
    assert got["ms_per_image"] == pytest.approx(1000 * (2.6 / 30 + 0.02 / 20)) and not got["ms_measured"]
    other = run("other-device", stage="finetune", mode="full", cost=_cost("model", 9.0, device="cuda:0"))
    assert usage.usage([*runs, other])["other-device"]["ms_per_image"] == 9.0  # another machine: its own figure
