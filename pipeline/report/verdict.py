"""What the numbers say, in plain words: which method to use and why (the verdict; the choice itself
is choice.py's, verdict.json record.py's), the summary paragraphs, and the notes on the published
numbers and frozen-trunk runs. Pure functions of the loaded runs and the table rows. Paired tests
only: exact McNemar of each method against the best on the same val images, Holm-corrected over
every method compared with the best; separable iff Holm p < ALPHA; runs on other images are not
comparable.
"""
from __future__ import annotations

import math
import statistics
from typing import NamedTuple

from ..runs.metrics import mcnemar_min_detectable_any, mcnemar_power_min_difference
from ..runs.read import Run
from .blocks import md_code
from .choice import ALPHA, Comparison, Judged, compare_with_best, judge
from .notes import frozen_note
from .rows import fmt_pct, fmt_seconds

__all__ = ["frozen_note"]  # re-exported: the summary's last paragraph

POWER = 0.8  # the detectable difference is the one the test finds 4 times in 5
SPLIT = "val"  # the split the methods are compared on; when a test split exists, the verdict cites it too


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


def verdict(rows: list[dict], runs: list[Run], judged: Judged | None = None) -> str:
    """The report's first paragraph: which method to use and why, its accuracy with its interval and
    cost, the smallest difference these val images can detect, which methods they cannot tell apart
    or cannot compare, the test score (or that val chose the winner it scores), and the run folder to
    pass to predict and export."""
    comps, rec = judged or judge(rows, runs)
    use = rec.use
    what = f"**Use {use['name']}** ({use['method']}): {_acc_words(use)}"
    if not comps:
        parts = (what + ". It is the only method run, so there is nothing to compare it with.",
                 _folder_words(use, runs))
    else:
        parts = (_verdict_head(what, rec, comps), _detect_words(min_detectable(comps, use), rec.best, rec.tied),
                 _not_comparable(comps), _short_words(rows, use), _on_test(use) if use.get("test_accuracy") is not None
                 else _optimistic(rec.best, len(comps) + 1), _folder_words(use, runs))
    return " ".join(p for p in parts if p)


def run_folder(row: dict, runs: list[Run]) -> str:
    """The run folder of a table row, as the report was given it: what predict and export take."""
    return next(r.dir for r in runs if r.slug == row["run"]).as_posix()


def _folder_words(use: dict, runs: list[Run]) -> str:
    folder = md_code(run_folder(use, runs))
    return f"Its run folder, for `cnncodes predict --model` and `cnncodes export --model`: {folder}."


def _on_test(rec: dict) -> str:
    """The recommended method's score on the test split: images no choice has seen, unless the audit
    found copies of some in train (then flagged, and the score without them given)."""
    lo, hi = 100 * rec["test_ci95_lo"], 100 * rec["test_ci95_hi"]
    score = (f"**{rec['name']}** scores {fmt_pct(rec['test_accuracy'])} ({rec['test_correct']} of {rec['n_test']}), "
             f"95% interval [{lo:.1f}, {hi:.1f}]")
    if not rec.get("test_leaks"):
        return (f"On the {rec['n_test']} test images, which no choice has seen (CV or held-out train chose each "
                f"method's settings, val chose the method), {score}: the number to expect on new images like these "
                "(the val numbers above are optimistic, since val chose).")
    k, n = rec["test_correct_without_leaks"], rec["n_test_without_leaks"]
    clean = (f"{fmt_pct(rec['test_accuracy_without_leaks'])} ({k} of {n}), 95% interval "
             f"[{100 * rec['test_without_leaks_ci95_lo']:.1f}, {100 * rec['test_without_leaks_ci95_hi']:.1f}]"
             if n else "nothing: every test image leaked")
    return (f"On the {rec['n_test']} test images {score}, **but the audit found {rec['test_leaks']} of them with a "
            f"near-copy in train** (train↔test leaks): those were seen in training. Without them it scores {clean}: "
            "the number to expect on new images like these (no choice saw the test split; the val numbers above are "
            "optimistic, since val chose).")


def _short_words(rows: list[dict], use: dict) -> str:
    """Fine-tunes stopped short of the recipe, named so that no one reads their score as fine-tuning's."""
    short = [r for r in rows if r["kind"] == "ours" and r.get("short_of_recipe")]
    if not short:
        return ""
    each = "; ".join(f"**{r['name']}** ran {r['short_of_recipe']}" for r in short)
    mine = " (the recommended one among them)" if use in short else ""
    says = "its score says" if len(short) == 1 else "their scores say"
    return f"Stopped short of the recipe{mine}: {each}, so {says} little about what fine-tuning reaches."


def _verdict_head(what: str, rec, comps: list[Comparison]) -> str:
    use, best, tied = rec.use, rec.best, rec.tied
    cost = f"at {fmt_seconds(use['total_s'])} s of compute"
    if not tied:
        paired = sum(c.comparable for c in comps)
        if not paired:
            return what + f". It is the best on val, {cost}."
        others = "the other method" if paired == 1 else f"each of the {paired} other methods"
        return what + (f", the best on val and separable from {others} paired with it (exact McNemar on the same "
                       f"images, Holm-corrected p < {ALPHA}), {cost}.")
    reason = (f"Why this one: of the {len(tied) + 1} methods these val images cannot tell apart, "
              + "; ".join(rec.why) + ".")
    if use is best:
        return what + f", the best on val, {cost}. {reason}"
    c = next(c for c in comps if c.row is use)
    return what + (f", {cost}. On these {c.n} val images it cannot be told apart from the best, **{best['name']}** "
                   f"({fmt_pct(best['accuracy'])}; {c.b} image{'s' * (c.b != 1)} only the best gets right, {c.c} "
                   f"only this one; exact McNemar p = {c.p:.2g}, Holm-corrected {c.p_holm:.2g}). {reason}")


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
        floor = mcnemar_min_detectable_any(det.n, ALPHA, POWER)
        tail = (f"with {share}, no difference would be found reliably ({POWER:.0%} of the time by the exact McNemar "
                f"test at p < {ALPHA}), and on {det.n} images none under {100 * floor:.1f} points could be, however "
                "often the methods disagree")
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


def summary_paragraphs(rows: list[dict], runs: list[Run], judged: Judged | None = None) -> list[str]:
    """'What this shows', written from the numbers: the best method, the gap to the runner-up in val
    images, the paired test of every method against the best, and the notes."""
    ours = [r for r in rows if r["kind"] == "ours"]
    best = ours[0]
    out = [f"Best on val: **{best['name']}**, {_acc_words(best)}."]
    if len(ours) == 1:
        out[0] += " Only one method was run, so there is nothing to compare it with."
    else:
        comps = judged.comparisons if judged else compare_with_best(rows, runs)
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
