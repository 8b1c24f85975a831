"""What the numbers say, in plain words: the paired tests against the best, which method to use (the
verdict), the summary paragraphs, verdict.json's record, and the notes on the published numbers and
frozen-trunk runs. Pure functions of the loaded runs and the table rows. Paired tests only: exact
McNemar of each method against the best on the same val images, Holm-corrected over every method
compared with the best; separable iff Holm p < ALPHA; runs on other images are not comparable.
"""
from __future__ import annotations

import math
import statistics
from typing import NamedTuple

from ..runs.read import Run
from ..runs.metrics import corrected_resampled_t, holm, mcnemar_exact, mcnemar_power_min_difference
from .notes import frozen_note
from .rows import fmt_pct, fmt_seconds

__all__ = ["frozen_note"]  # re-exported: the summary's last paragraph

ALPHA = 0.05  # a method is separable from the best when its Holm-adjusted exact McNemar p < ALPHA
CORRECTION = "holm"  # over the family of every method compared with the best
POWER = 0.8  # the detectable difference is the one the test finds 4 times in 5
SPLIT = "val"  # the split the methods are compared on; when a test split exists, the verdict cites it too
COST_SLACK = 1.5  # costs within this factor of the cheapest count as equally cheap


def paired_test(a: Run, b: Run) -> dict | None:
    """Exact McNemar between two runs on the val images both scored, matched by image path (their
    prediction lists need not be in the same order). None when they share no image."""
    ca = {p["path"]: p["pred"] == p["true"] for p in a.m.get("predictions") or []}
    cb = {p["path"]: p["pred"] == p["true"] for p in b.m.get("predictions") or []}
    common = sorted(ca.keys() & cb.keys())
    if not common:
        return None
    res = mcnemar_exact([ca[k] for k in common], [cb[k] for k in common])
    return {**res, "n": len(common), "unmatched": len(ca.keys() ^ cb.keys())}


class Comparison(NamedTuple):
    """One method against the best on the same val images; the numbers are None when not comparable."""

    row: dict  # the method's table row
    n: int | None  # val images both scored
    b: int | None  # images only the best gets right
    c: int | None  # images only this method gets right
    p: float | None  # exact McNemar p, before correction
    p_holm: float | None  # Holm-adjusted over every method compared with the best

    @property
    def comparable(self) -> bool:
        return self.n is not None

    @property
    def separable(self) -> bool:
        return self.p_holm is not None and self.p_holm < ALPHA


def compare_with_best(rows: list[dict], runs: list[Run]) -> list[Comparison]:
    """Every method of ours but the best (table order) against the best. A run that did not score
    exactly the best's val images (or stored no predictions) cannot be paired: not comparable."""
    by_slug = {r.slug: r for r in runs}
    ours = [r for r in rows if r["kind"] == "ours"]
    tests = [paired_test(by_slug[ours[0]["run"]], by_slug[o["run"]]) for o in ours[1:]]
    tests = [t if t and not t["unmatched"] else None for t in tests]
    adjusted = iter(holm([t["p_value"] for t in tests if t]))
    return [Comparison(o, t["n"], t["only_a"], t["only_b"], t["p_value"], next(adjusted)) if t
            else Comparison(o, None, None, None, None, None) for o, t in zip(ours[1:], tests)]


class Recommendation(NamedTuple):
    use: dict  # the row of the method to use
    best: dict  # the row of the best on val
    tied: list[dict]  # the rows val cannot separate from the best (comparable, Holm p >= ALPHA)


def recommend(rows: list[dict], runs: list[Run], comparisons: list[Comparison] | None = None) -> Recommendation:
    """The method to use, the best, and those not separable from the best. Among the best and those,
    the cheapest ones (within COST_SLACK of the least compute) are kept and the most accurate of
    those is recommended: a method 10× cheaper that val cannot tell apart from the best is the
    practical answer, one that saves a second is not worth its lower score."""
    comparisons = compare_with_best(rows, runs) if comparisons is None else comparisons
    best = next(r for r in rows if r["kind"] == "ours")
    tied = [c.row for c in comparisons if c.comparable and not c.separable]
    costed = [o for o in [best, *tied] if o["total_s"] is not None]
    if not costed:
        return Recommendation(best, best, tied)
    cheapest = min(o["total_s"] for o in costed)
    use = next(o for o in costed if o["total_s"] <= COST_SLACK * cheapest)  # rows are best first
    return Recommendation(use, best, tied)


class Detectable(NamedTuple):
    """The smallest accuracy difference these val images detect with POWER at ALPHA."""

    difference: float  # inf: too few images disagree for any difference to be detected
    n: int  # val images
    discordance: float  # the share of images on which the two methods disagree
    source: str  # which discordance: "best vs recommended" or "median over K comparisons with the best"


def min_detectable(comparisons: list[Comparison], rec: dict) -> Detectable | None:
    """At the discordance between the best and the recommended method; at the median discordance
    over every comparison with the best when the recommended is the best, or when the two disagree
    on too few images for any difference to be detected. None when nothing could be paired."""
    paired = [c for c in comparisons if c.comparable]
    if not paired:
        return None
    n = paired[0].n
    own = next((c for c in paired if c.row["run"] == rec["run"]), None)
    if own:
        found = Detectable(mcnemar_power_min_difference(n, (own.b + own.c) / n, ALPHA, POWER), n,
                           (own.b + own.c) / n, "best vs recommended")
        if math.isfinite(found.difference):
            return found
    d = statistics.median((c.b + c.c) / c.n for c in paired)
    source = f"median over {len(paired)} comparison{'s' * (len(paired) != 1)} with the best"
    return Detectable(mcnemar_power_min_difference(n, d, ALPHA, POWER), n, d, source)


def verdict(rows: list[dict], runs: list[Run]) -> str:
    """The report's first paragraph: which method to use, its accuracy with its interval, its cost
    against the best's, the smallest difference these val images can detect, which methods they
    cannot tell apart or cannot compare, and that val chose the winner it scores."""
    comps = compare_with_best(rows, runs)
    rec, best, tied = recommend(rows, runs, comps)
    what = f"**Use {rec['name']}** ({rec['method']}): {_acc_words(rec)}"
    if not comps:
        return what + ". It is the only method run, so there is nothing to compare it with."
    parts = (_verdict_head(what, rec, best, tied, comps), _detect_words(min_detectable(comps, rec), best, tied),
             _not_comparable(comps), _on_test(rec) if rec.get("test_accuracy") is not None else
             _optimistic(best, len(comps) + 1))
    return " ".join(p for p in parts if p)


def _on_test(rec: dict) -> str:
    """The recommended method's score on the test split: images no choice has seen."""
    lo, hi = 100 * rec["test_ci95_lo"], 100 * rec["test_ci95_hi"]
    return (f"On the {rec['n_test']} test images, which no choice has seen (CV or held-out train chose each method's "
            f"settings, val chose the method), **{rec['name']}** scores {fmt_pct(rec['test_accuracy'])} "
            f"({rec['test_correct']} of {rec['n_test']}), 95% interval [{lo:.1f}, {hi:.1f}]: the number to expect "
            "on new images like these (the val numbers above are optimistic, since val chose).")


def _verdict_head(what: str, rec: dict, best: dict, tied: list[dict], comps: list[Comparison]) -> str:
    if rec is best:
        paired = sum(c.comparable for c in comps)
        if tied:
            return what + (f". It is the best on val, and none of the {len(tied)} methods within noise of it costs "
                           f"much less ({fmt_seconds(best['total_s'])} s of compute).")
        if not paired:
            return what + f". It is the best on val, at {fmt_seconds(best['total_s'])} s of compute."
        others = "the other method" if paired == 1 else f"each of the {paired} other methods"
        return what + (f", the best on val and separable from {others} paired with it (exact McNemar on the same "
                       f"images, Holm-corrected p < {ALPHA}), at {fmt_seconds(best['total_s'])} s of compute.")
    c = next(c for c in comps if c.row is rec)
    ratio = best["total_s"] / rec["total_s"] if best["total_s"] and rec["total_s"] else None
    cost = (f"at {fmt_seconds(rec['total_s'])} s of compute against {fmt_seconds(best['total_s'])} s"
            + (f" ({ratio:.0f}× less)" if ratio and ratio >= 2 else ""))
    return what + (f". On these {c.n} val images it cannot be told apart from the best, **{best['name']}** "
                   f"({fmt_pct(best['accuracy'])}; {c.b} image{'s' * (c.b != 1)} only the best gets right, {c.c} "
                   f"only this one; exact McNemar p = {c.p:.2g}, Holm-corrected {c.p_holm:.2g}), and of the "
                   f"{len(tied) + 1} methods within noise of the best it is the most accurate of the cheapest, {cost}.")


def _detect_words(det: Detectable | None, best: dict, tied: list[dict]) -> str:
    """The smallest difference these val images detect, and which methods they cannot tell apart."""
    if det is None:
        return ""
    share = (f"{fmt_pct(det.discordance)} of the images right for one of the two only, as "
             + ("for the best and the recommended method" if det.source == "best vs recommended"
                else f"in the {det.source}"))
    if math.isfinite(det.difference):
        tail = (f"a difference smaller than about {100 * det.difference:.1f} points ({det.difference * det.n:.0f} "
                f"of {det.n} images) would go unseen (the exact McNemar test at p < {ALPHA} finds one that size "
                f"{POWER:.0%} of the time with {share})")
    else:
        tail = (f"with {share}, no difference would be found reliably ({POWER:.0%} of the time by the exact McNemar "
                f"test at p < {ALPHA})")
    lead = f"These {det.n} val images cannot tell {_names([best, *tied])} apart; " if tied else \
        f"With these {det.n} val images, "
    return f"{lead}{tail}."


def _names(rows: list[dict], most: int = 5) -> str:
    """'**a**', '**a** and **b**', '**a**, **b** and **c**'; past `most`, the rest as 'N others'."""
    names = [f"**{r['name']}**" for r in rows]
    if len(names) > most:
        names = [*names[: most - 1], f"{len(names) - most + 1} others"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _not_comparable(comps: list[Comparison]) -> str:
    lost = [c.row for c in comps if not c.comparable]
    if not lost:
        return ""
    one = len(lost) == 1
    return (f"{_names(lost, len(lost))} {'was' if one else 'were'} not scored on the same val images as the best (or "
            f"stored no predictions), so {'it is' if one else 'they are'} not comparable with it: neither tied nor "
            "separable.")


def _optimistic(best: dict, n_methods: int) -> str:
    return (f"Val both chose the winner among {n_methods} methods and scored it (there is no test split), so "
            f"**{best['name']}**'s {fmt_pct(best['accuracy'])} is optimistic: expect a little less on new images.")


def _acc_words(row: dict) -> str:
    k = f" ({row['correct']} of {row['n_val']})" if row["correct"] is not None else ""
    lo, hi = 100 * row["accuracy_ci95_lo"], 100 * row["accuracy_ci95_hi"]
    return f"{fmt_pct(row['accuracy'])}{k}, 95% interval [{lo:.1f}, {hi:.1f}]"


def summary_paragraphs(rows: list[dict], runs: list[Run]) -> list[str]:
    """'What this shows', written from the numbers: the best method, the gap to the runner-up in val
    images, the paired test of every method against the best, and the notes."""
    ours = [r for r in rows if r["kind"] == "ours"]
    best = ours[0]
    out = [f"Best on val: **{best['name']}**, {_acc_words(best)}."]
    if len(ours) == 1:
        out[0] += " Only one method was run, so there is nothing to compare it with."
    else:
        comps = compare_with_best(rows, runs)
        out += [_runner_up(best, comps[0], sum(c.comparable for c in comps)), _tests_text(comps)]
    out.append(frozen_note(runs))
    return [p for p in out if p]


def _runner_up(best: dict, comp: Comparison, family: int) -> str:
    """The runner-up, its gap to the best in val images, the paired test, and whether it is noise."""
    second = comp.row
    s = f"Runner-up: **{second['name']}**, {_acc_words(second)}. "
    if best["n_val"] == second["n_val"] and best["correct"] is not None and second["correct"] is not None:
        gap = best["correct"] - second["correct"]
        s += (f"The top two are {gap} val image{'s' * (gap != 1)} apart. " if gap
              else "The top two get the same number of val images right. ")
    else:
        gap = 100 * (best["accuracy"] - second["accuracy"])
        s += f"The top two are {gap:.1f} percentage points apart (scored on different val sets). "
    if not comp.comparable:
        return s + ("Their predictions are not on the same val images, so no paired test is possible: the two are "
                    "not comparable, which is not a tie.")
    s += (f"Exact McNemar test on the {comp.n} val images both scored: the best alone is right on {comp.b}, the "
          f"runner-up alone on {comp.c}, p = {comp.p:.3g}, Holm-corrected over the {family} method"
          f"{'s' * (family != 1)} compared with the best: {comp.p_holm:.3g}. ")
    if comp.separable:
        return s + f"The difference is unlikely to be noise (Holm-corrected p < {ALPHA})."
    return s + (f"The difference is within noise (Holm-corrected p ≥ {ALPHA}): on these {comp.n} val images the two "
                "cannot be told apart, so do not read their order as a real ranking.")


def _tests_text(comps: list[Comparison]) -> str:
    """Every method against the best: b, c, p before and after Holm, separable or not."""
    paired = [c for c in comps if c.comparable]
    s = ""
    if paired:
        s = (f"Each method against the best on the same {paired[0].n} val images (b: only the best right, c: only "
             f"the method right; exact McNemar p, then Holm-corrected over the {len(paired)}): "
             + "; ".join(f"**{c.row['name']}** b = {c.b}, c = {c.c}, p = {c.p:.2g} → {c.p_holm:.2g}, "
                         + ("separable" if c.separable else "within noise") for c in paired) + ". ")
        tied = sum(not c.separable for c in paired)
        s += (f"{tied} of the {len(paired)} cannot be told apart from the best on these images. " if tied else
              f"Every one of them is separable from the best (Holm-corrected p < {ALPHA}). ")
    return (s + _not_comparable(comps)).strip()


def verdict_record(rows: list[dict], runs: list[Run]) -> dict:
    """verdict.json: the recommendation, the best, the detectable difference and every method's paired
    test against the best (the best itself: b = c = 0, no p), named as the main table names them.
    separable_from_best is None (null) for a method that could not be paired with the best."""
    comps = compare_with_best(rows, runs)
    rec, best, _ = recommend(rows, runs, comps)
    det = min_detectable(comps, rec)
    # over repeats, each method is paired with the best of those that were repeated (the best on val
    # may not have been: a run made without --repeats, e.g. with --exclude)
    anchor = next((r for r in [best, *(c.row for c in comps)] if r.get("repeats")), {})
    methods = [{"name": c.row["name"], "accuracy": c.row["accuracy"] if _finite(c.row["accuracy"]) else None,
                "n": c.row["n_val"], "correct": c.row["correct"], "test_accuracy": c.row.get("test_accuracy"),
                "repeats": _repeats(anchor, c.row), "b": c.b, "c": c.c, "p_vs_best": c.p,
                "p_holm": c.p_holm, "separable_from_best": c.separable if c.comparable else None,
                "comparable": c.comparable} for c in [Comparison(best, best["n_val"], 0, 0, None, None), *comps]]
    on_test = rec.get("test_accuracy") is not None
    return {"split": "test" if on_test else SPLIT, "compared_on": SPLIT,
            **({"test": {"accuracy": rec["test_accuracy"], "n": rec["n_test"], "correct": rec["test_correct"],
                         "ci95": [rec["test_ci95_lo"], rec["test_ci95_hi"]]}} if on_test else {}),
            "recommended": rec["name"], "best": best["name"], "alpha": ALPHA,
            "correction": CORRECTION, "power": POWER,
            "min_detectable_difference": det.difference if det and _finite(det.difference) else None,
            "min_detectable_from": det.source if det else None, "methods": methods,
            "use": _what(rec, runs)}  # the recommended method's backbone, weights and head


def _what(row: dict, runs: list[Run]) -> dict:
    """The recommended method as parts: its backbone, weights and head (or fine-tuning mode)."""
    m = next((r.m for r in runs if r.slug == row["run"]), {})
    return {"backbone": row["backbone"], "weights": row["weights"], "stage": row["stage"],
            "head": m.get("head") or m.get("mode")}


def _repeats(anchor: dict, row: dict) -> dict | None:
    """The method over classify or finetune --repeats re-drawn splits, and against `anchor` (the best
    method that was repeated; `vs` names it) on the same draws (Nadeau and Bengio's corrected
    resampled t: the training sets overlap, a plain t would be far too confident)."""
    a, b = anchor.get("repeats"), row.get("repeats")
    if not b:
        return None
    out = {"mean": b["mean"], "sd": b["sd"], "repeats": b["repeats"]}
    draws = ("repeats", "seed", "n_test", "pooled")  # the same draws of the same images (older runs: no pooled)
    if a and a is not b and [a.get(k) for k in draws] == [b.get(k) for k in draws]:
        diffs = [x - y for x, y in zip(a["accuracy"], b["accuracy"])]
        if any(diffs) or len(set(diffs)) > 1:
            t = corrected_resampled_t(diffs, a["n_train"], a["n_test"])
            out |= {"vs": anchor["name"], "diff_vs_best": t["mean"], "p_vs_best": t["p"],
                    "test": "corrected resampled t (Nadeau-Bengio)"}
    return out


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def standing(rows: list[dict], runs: list[Run], comparisons: list[Comparison] | None = None) -> dict[str, str]:
    """By run slug, each method against the best in a few words, for the main table."""
    comparisons = compare_with_best(rows, runs) if comparisons is None else comparisons
    out = {next(r for r in rows if r["kind"] == "ours")["run"]: "best on val"}
    for c in comparisons:
        out[c.row["run"]] = ("not paired" if not c.comparable else
                             f"{'worse' if c.separable else 'within noise'}, p = {c.p_holm:.2g}")
    return out
