"""verdict.json: the recommendation and its reason, the run folder to pass to predict and export,
the test score (with and without leaked test images), the detectable difference and every method's
paired test against the best, named as the main table names them.
"""
from __future__ import annotations

from ..runs.metrics import holm, mcnemar_min_detectable_any
from ..runs.read import Run
from .choice import ALPHA, COST_RATIO, CORRECTION, Comparison, Judged, judge, redrawn_t
from .verdict import POWER, SPLIT, Detectable, _finite, min_detectable, run_folder


def verdict_record(rows: list[dict], runs: list[Run], judged: Judged | None = None) -> dict:
    """verdict.json: the recommendation, the best, the detectable difference and every method's paired
    test against the best (the best itself: b = c = 0, no p), named as the main table names them.
    separable_from_best is None (null) for a method that could not be paired with the best."""
    comps, choice = judged or judge(rows, runs)
    rec, best = choice.use, choice.best
    det = min_detectable(comps, rec)
    # over repeats, each method is paired with the best of those that were repeated (the best on val
    # may not have been: a run made without --repeats, e.g. with --exclude)
    anchor = next((r for r in [best, *(c.row for c in comps)] if r.get("repeats")), {})
    methods = [{"name": c.row["name"], "accuracy": c.row["accuracy"] if _finite(c.row["accuracy"]) else None,
                "n": c.row["n_val"], "correct": c.row["correct"], "test_accuracy": c.row.get("test_accuracy"),
                "repeats": _repeats(anchor, c.row), "b": c.b, "c": c.c, "p_vs_best": c.p,
                "p_holm": c.p_holm, "separable_from_best": c.separable if c.comparable else None,
                "comparable": c.comparable, "short_of_recipe": c.row.get("short_of_recipe"),
                "test_leaks": c.row.get("test_leaks")}
               for c in [Comparison(best, best["n_val"], 0, 0, None, None), *comps]]
    _holm_repeats([m["repeats"] for m in methods if m["repeats"] and "p_vs_best" in m["repeats"]])
    on_test = rec.get("test_accuracy") is not None
    return {"split": "test" if on_test else SPLIT, "compared_on": SPLIT,
            **({"test": _test_record(rec)} if on_test else {}),
            "recommended": rec["name"], "use": _what(rec, runs), "run_folder": run_folder(rec, runs),
            "reason": "; ".join(choice.why) or "the most accurate on val", "tied_with_best": len(choice.tied),
            "best": best["name"], "alpha": ALPHA, "cost_ratio": COST_RATIO,
            "correction": CORRECTION, "power": POWER,
            **_detectable_record(det, len(comps)), "methods": methods}


def _what(row: dict, runs: list[Run]) -> dict:
    """The recommended method as parts: its backbone, weights and head (or fine-tuning mode)."""
    m = next((r.m for r in runs if r.slug == row["run"]), {})
    return {"backbone": row["backbone"], "weights": row["weights"], "stage": row["stage"],
            "head": m.get("head") or m.get("mode")}


def _holm_repeats(repeats: list[dict]) -> None:
    """Holm over every re-drawn-splits comparison with the repeated best, as over the McNemar ones."""
    for r, p in zip(repeats, holm([r["p_vs_best"] for r in repeats])):
        r["p_holm_vs_best"] = p


def _test_record(rec: dict) -> dict:
    """The recommended method on test; with `leaks` (test images with a copy in train) and its score
    without them where the audit found some."""
    out = {"accuracy": rec["test_accuracy"], "n": rec["n_test"], "correct": rec["test_correct"],
           "ci95": [rec["test_ci95_lo"], rec["test_ci95_hi"]], "leaks": rec.get("test_leaks") or 0}
    if rec.get("test_leaks"):
        out["without_leaks"] = {"accuracy": rec["test_accuracy_without_leaks"], "n": rec["n_test_without_leaks"],
                                "correct": rec["test_correct_without_leaks"],
                                "ci95": [rec["test_without_leaks_ci95_lo"], rec["test_without_leaks_ci95_hi"]]}
    return out


def _detectable_record(det: Detectable | None, compared: int) -> dict:
    """min_detectable_difference: a number, or null and min_detectable_why says why not; with it the
    smallest difference these images could detect whatever the discordance (a lower bound)."""
    if det is None:
        why = ("only one method was run: nothing to compare" if not compared else
               "no method could be paired with the best on the same val images")
        return {"min_detectable_difference": None, "min_detectable_from": None, "min_detectable_why": why}
    finite = _finite(det.difference)
    why = None if finite else (
        f"the methods disagree on {det.discordance:.1%} of the {det.n} val images ({det.source}): too few "
        f"discordant images for the exact McNemar test at p < {ALPHA} to find any difference {POWER:.0%} of the time")
    return {"min_detectable_difference": det.difference if finite else None, "min_detectable_from": det.source,
            "min_detectable_why": why,
            "min_detectable_any_discordance": _or_none(mcnemar_min_detectable_any(det.n, ALPHA, POWER))}


def _or_none(x):
    return x if _finite(x) else None


def _repeats(anchor: dict, row: dict) -> dict | None:
    """The method over classify or finetune --repeats re-drawn splits, and against `anchor` (the best
    method that was repeated; `vs` names it) on the same draws (Nadeau and Bengio's corrected
    resampled t: the training sets overlap, a plain t would be far too confident)."""
    a, b = anchor.get("repeats"), row.get("repeats")
    if not b:
        return None
    out = {"mean": b["mean"], "sd": b["sd"], "repeats": b["repeats"]}
    t = redrawn_t(a, b) if a and a is not b else None
    if t:
        out |= {"vs": anchor["name"], "diff_vs_best": t["mean"], "p_vs_best": t["p"],
                "test": "corrected resampled t (Nadeau-Bengio)"}
    return out
