"""Which method to use. Every method is paired with the best on the same val images (exact McNemar,
Holm-corrected over every method compared with the best; separable iff Holm p < ALPHA). Among the
best and the methods val cannot tell from it, the tie is broken by what matters and is not noise, in
this order, each step keeping those it cannot separate:

1. Every image: a run trained on fewer images (`--exclude`, its run named ...-excluded) stays only
   when it is separably better than the same method on every image (exact McNemar, Holm over every
   such pair).
2. Usable probabilities: where some give class probabilities, those that give none (a margin, e.g.
   linsvc) drop; of the rest, those whose mean log-loss is both separably higher than the lowest
   (paired t on the per-image losses of the same val images, Holm over the candidates: log-loss is
   a mean, so the test is on the mean difference) and materially so (at least LOSS_RATIO times the
   lowest: a consistent gap of a few thousandths of a nat is not a reason to prefer a model) drop.
3. Re-drawn splits, where there are some: a method separably worse than the best repeated one on
   the same draws (Nadeau and Bengio's corrected resampled t, Holm) drops.
4. Cost, only where it is real: a method costs less only when its compute is under 1/COST_RATIO of
   the other's; those within COST_RATIO of the cheapest count as equally cheap.
Then the most accurate on val of those left (ties: the higher re-drawn mean, the lower log-loss,
table order). The steps that decided give the reason.
"""
from __future__ import annotations

from typing import NamedTuple

from ..runs.metrics import corrected_resampled_t, holm, mcnemar_exact
from ..runs.read import Run
from .quality import has_probabilities
from .rows import fmt_seconds

ALPHA = 0.05  # a method is separable from the best when its Holm-adjusted exact McNemar p < ALPHA
CORRECTION = "holm"  # over the family of every method compared with the best (and within each tie-break)
# Compute within this factor counts as equal: on a shared machine one job's time moves by tens of
# percent between runs, and the same model made twice (full FT with the lr tuning picking the
# recipe's lr) took 164 and 54 ms per image; a difference under 2x is no reason to choose.
COST_RATIO = 2.0
# Mean log-loss within this factor of the lowest counts as equally usable, however consistent the gap:
# a method drops for its probabilities only when they are separably AND materially worse.
LOSS_RATIO = 1.25
DRAWS = ("repeats", "seed", "n_test", "pooled")  # what makes two runs' re-drawn splits the same draws
TWIN = "-excluded"  # classify --exclude names its run so, beside the run on every image


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


class Twin(NamedTuple):
    """A method run on every image (`full`) and again with --exclude (`fewer`), paired on val."""

    full: dict
    fewer: dict
    test: dict | None  # exact McNemar (only_a: only the run on every image right), None: no image in common
    p_holm: float | None  # Holm-adjusted over every such pair

    @property
    def fewer_better(self) -> bool:
        """The run on fewer images is separably better than the one on every image."""
        return self.p_holm is not None and self.p_holm < ALPHA and self.test["only_b"] > self.test["only_a"]


def twins(rows: list[dict], runs: list[Run]) -> list[Twin]:
    """Every method run both on every image and with --exclude, Holm-corrected over the pairs."""
    ours = {r["run"]: r for r in rows if r["kind"] == "ours"}
    by_slug = {r.slug: r for r in runs}
    pairs = [(ours[s[:-len(TWIN)]], ours[s]) for s in ours if s.endswith(TWIN) and s[:-len(TWIN)] in ours]
    tests = [paired_test(by_slug[a["run"]], by_slug[b["run"]]) for a, b in pairs]
    adjusted = iter(holm([t["p_value"] for t in tests if t]))
    return [Twin(a, b, t, next(adjusted) if t else None) for (a, b), t in zip(pairs, tests)]


class Recommendation(NamedTuple):
    use: dict  # the row of the method to use
    best: dict  # the row of the best on val
    tied: list[dict]  # the rows val cannot separate from the best (comparable, Holm p >= ALPHA)
    why: list[str] = []  # the tie-break steps that decided, as clauses of one sentence


class Judged(NamedTuple):
    """The paired tests against the best and the recommendation made from them: computed once per
    report (`judge`) and handed to every part that says or draws them."""

    comparisons: list[Comparison]
    choice: Recommendation


def judge(rows: list[dict], runs: list[Run]) -> Judged:
    comparisons = compare_with_best(rows, runs)
    return Judged(comparisons, recommend(rows, runs, comparisons))


def recommend(rows: list[dict], runs: list[Run], comparisons: list[Comparison] | None = None) -> Recommendation:
    """The method to use, the best, those not separable from the best, and why (the module's rule)."""
    comparisons = compare_with_best(rows, runs) if comparisons is None else comparisons
    best = next(r for r in rows if r["kind"] == "ours")
    tied = [c.row for c in comparisons if c.comparable and not c.separable]
    left, why = [best, *tied], []
    by_slug = {r.slug: r for r in runs}
    for step in (_every_image, _probabilities, _redrawn, _cost):
        left, said = step(left, rows, runs, by_slug)
        why += [said] if said else []
    use = min(left, key=_final)
    return Recommendation(use, best, tied, why + [_final_words(use, left, "left" if why else "")] if len(left) > 1
                          else why)


def _final(row: dict):
    """The most accurate on val; then the higher re-drawn mean; then the lower log-loss; then table order."""
    mean = (row.get("repeats") or {}).get("mean")
    return (-(row["accuracy"] or 0.0), -mean if mean is not None else 1.0,
            row["log_loss"] if row.get("log_loss") is not None else float("inf"))


def _every_image(left, rows, runs, by_slug):
    fewer = {t.fewer["run"]: t for t in twins(rows, runs)}
    drop = [r for r in left if r["run"] in fewer and not fewer[r["run"]].fewer_better]
    if not drop or len(drop) == len(left):
        return left, ""
    return [r for r in left if r not in drop], (
        f"it is trained on every image ({_count(drop, 'run')} with --exclude not separably better than the same "
        f"method on every image: exact McNemar, Holm over the {len(fewer)} such pair{'s' * (len(fewer) != 1)})")


def _probabilities(left, rows, runs, by_slug):
    probs = [r for r in left if has_probabilities(by_slug[r["run"]])]
    if not probs:
        return left, ""
    none = [r for r in left if r not in probs]
    said = [f"it gives probabilities, which {_count(none, 'method')} do{'es' * (len(none) == 1)} not"] if none else []
    losses = {r["run"]: _losses(by_slug[r["run"]]) for r in probs}
    scored = [r for r in probs if losses[r["run"]]]
    lowest = min(scored, key=lambda r: _mean(losses[r["run"]]), default=None)
    others = [r for r in scored if r is not lowest]
    if others:
        p = holm([_paired_t(losses[lowest["run"]], losses[r["run"]]) for r in others])
        floor = LOSS_RATIO * _mean(losses[lowest["run"]])
        worse = [r for r, q in zip(others, p) if q < ALPHA and _mean(losses[r["run"]]) > floor]
        probs = [r for r in probs if r not in worse]
        said += [f"its probabilities are not separably worse than the best ones ({_count(worse, 'method')} with a "
                 f"separably higher mean log-loss, over {LOSS_RATIO:g}× the lowest: paired t, Holm)"] if worse else []
    return probs, "; ".join(said)


def redrawn_t(a: dict, b: dict) -> dict | None:
    """Nadeau and Bengio's corrected resampled t of `a`'s re-drawn-split accuracies minus `b`'s (the
    `repeats` records of two runs), when both are the same draws of the same images (older runs: no
    pooled) and differ on some; else None."""
    if [a.get(k) for k in DRAWS] != [b.get(k) for k in DRAWS]:
        return None
    diffs = [x - y for x, y in zip(a["accuracy"], b["accuracy"])]
    return corrected_resampled_t(diffs, a["n_train"], a["n_test"]) if any(diffs) else None


def _redrawn(left, rows, runs, by_slug):
    rep = [r for r in left if (r.get("repeats") or {}).get("accuracy")]
    if len(rep) < 2:
        return left, ""
    top = max(rep, key=lambda r: r["repeats"]["mean"])
    tests = {r["run"]: redrawn_t(top["repeats"], r["repeats"]) for r in rep if r is not top}
    same = [r for r in rep if tests.get(r["run"])]
    if not same:
        return left, ""
    p = holm([tests[r["run"]]["p"] for r in same])
    worse = [r for r, q in zip(same, p) if q < ALPHA]
    if not worse:
        return left, ""
    return [r for r in left if r not in worse], (
        f"its re-drawn splits are not separably worse than {top['name']}'s ({_count(worse, 'method')} "
        "separably worse: corrected resampled t, Holm)")


def _cost(left, rows, runs, by_slug):
    costed = [r for r in left if r["total_s"] is not None]
    if not costed:
        return left, ""
    cheapest = min(r["total_s"] for r in costed)
    keep = [r for r in left if r["total_s"] is None or r["total_s"] <= COST_RATIO * cheapest]
    if len(keep) == len(left):
        return left, ""
    return keep, (f"it is among the cheapest (within {COST_RATIO:g}× of the least compute, {fmt_seconds(cheapest)} s; "
                  f"{_count([r for r in left if r not in keep], 'method')} costing more "
                  f"drop{'s' * (len(left) - len(keep) == 1)}: a smaller difference is timing noise)")


def _final_words(use: dict, left: list[dict], kept: str) -> str:
    """Why `use` of those `left`: the most accurate on val, then the tie-breaks (module docstring)."""
    level = [r for r in left if r["accuracy"] == use["accuracy"]]
    which = f"of the {len(left)} {kept}, " if kept else ""
    if len(level) == 1:
        return f"{which}it is the most accurate on val"
    key, tie = _final(use), f"{which}{len(level)} are equally accurate on val"
    if any(_final(r)[1] != key[1] for r in level):
        return f"{tie}, and it has the highest re-drawn mean"
    if any(_final(r)[2] != key[2] for r in level):
        return f"{tie}, and it has the lowest log-loss"
    return f"{tie} and alike on these: it is the first in the table"


def _losses(run: Run) -> dict[str, float]:
    return {p["path"]: p["loss"] for p in run.m.get("predictions") or [] if p.get("loss") is not None}


def _mean(losses: dict[str, float]) -> float:
    return sum(losses.values()) / len(losses)


def _paired_t(a: dict[str, float], b: dict[str, float]) -> float:
    """Two-sided paired t p of the per-image losses on the images both scored (the mean difference,
    which is what a log-loss gap is; a signed-rank test would judge the median); 1 when equal."""
    from scipy.stats import ttest_rel

    common = sorted(a.keys() & b.keys())
    d = [b[k] - a[k] for k in common]
    if not any(d):
        return 1.0
    if len(set(d)) == 1:  # every image the same gap: no spread to test against, the gap is certain
        return 0.0
    return float(ttest_rel([b[k] for k in common], [a[k] for k in common]).pvalue)


def _count(rows: list[dict], what: str) -> str:
    return f"1 {what}" if len(rows) == 1 else f"{len(rows)} {what}s"
