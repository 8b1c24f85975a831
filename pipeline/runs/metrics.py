"""Every number we report, computed in one place: accuracy with a Wilson interval, balanced
accuracy, macro F1, per-class precision/recall, confusion, log-loss, the exact McNemar test and
the smallest difference it can detect, Holm's adjusted p-values, the corrected resampled t-test of
repeated train/test splits, and the per-epoch time rule. Statistics only: the run record that
holds them is in `runs`.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for k successes in n trials (sound at 0%, 100% and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # rounding leaves e.g. 0.9999999999999999 at k == n (n = 10, 13, 25...) and a hair above 0 at
    # k == 0: clip so that 0 <= lo <= k/n <= hi <= 1 exactly, and error bars are never negative
    return (min(max(0.0, centre - half), p), max(min(1.0, centre + half), p))


def scores(y_true, y_pred, classes: list[str], proba: np.ndarray | None = None) -> dict:
    """The evaluation block of metrics.json for one set of predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    k, n = int((y_true == y_pred).sum()), len(y_true)
    p, r, f, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": k / n if n else float("nan"),
        "accuracy_ci95": list(wilson(k, n)),
        "correct": k,
        "n": n,
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(sup[i])}
                      for i, c in enumerate(classes)},
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels).tolist(),  # rows: true, cols: predicted
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)) if proba is not None else None,
    }


def per_image(y_true, proba: np.ndarray | None = None, decision: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """(confidence, loss, what the confidence is) of each prediction, for finding what went wrong.

    With class probabilities: the predicted class's probability and the cross-entropy
    -log p(true class), as log_loss averages it. With a decision function only (LinearSVC): the
    margin of the prediction (its score minus the runner-up's; |d| for two classes) and the hinge
    loss of the true class, max(0, 1 - (d_true - max other d)), so images on the wrong side of the
    boundary, or barely on the right one, rank first."""
    y = np.asarray(y_true, dtype=np.int64)
    if proba is not None:
        p = np.asarray(proba, dtype=np.float64)
        loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))
        return p.max(axis=1), loss, "probability"
    d = np.asarray(decision, dtype=np.float64)
    if d.ndim == 1:  # two classes: the score of class 1 against class 0
        d = np.stack([-d, d], axis=1) / 2
    top2 = np.sort(d, axis=1)[:, -2:]
    others = d.copy()
    others[np.arange(len(y)), y] = -np.inf
    true_margin = d[np.arange(len(y)), y] - others.max(axis=1)
    return top2[:, 1] - top2[:, 0], np.maximum(0.0, 1.0 - true_margin), "margin"


def mcnemar_exact(correct_a, correct_b) -> dict:
    """Exact (binomial) McNemar test of two methods scored on the same images.

    b = images only A gets right, c = only B gets right; p is the two-sided binomial p-value of
    b against Binomial(b + c, 1/2). p = 1 when they never disagree.
    """
    from scipy.stats import binomtest

    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs both methods scored on the same images")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"only_a": b, "only_b": c, "p_value": p}


def mean_epoch_seconds(seconds: list[float]) -> float:
    """Mean epoch time, leaving out the first (warm-up) epoch when more than 2 were run."""
    return float(np.mean(seconds[1:] if len(seconds) > 2 else seconds))


def holm(pvalues) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given (reject where adjusted p <= alpha).

    The i-th smallest of m p-values is multiplied by m - i (i from 0), made non-decreasing in that
    order and capped at 1. Written out because scipy has only Benjamini-Hochberg
    (false_discovery_control) and statsmodels' multipletests is not a dependency."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    return adjusted.tolist()


def corrected_resampled_t(diffs, n_train: int, n_test: int) -> dict:
    """Nadeau & Bengio (2003) corrected resampled t-test of R paired score differences.

    `diffs`: method A's score minus method B's on each of R train/test re-draws of the same data,
    n_train and n_test images each. The re-draws overlap, so the plain t-test's variance sd^2/R
    is too small; the correction inflates it to (1/R + n_test/n_train) sd^2. t has R - 1 degrees
    of freedom; p is two-sided. For r repeats of k-fold CV, R = r*k and n_test/n_train = 1/(k-1)
    (Bouckaert & Frank 2004). n_test = 0 gives the ordinary one-sample t-test."""
    from scipy.stats import t as t_dist

    d = np.asarray(diffs, dtype=np.float64).ravel()
    R = len(d)
    if R < 2 or n_train <= 0 or n_test < 0:
        raise ValueError("the corrected resampled t-test needs at least 2 differences and n_train > 0")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = math.sqrt((1 / R + n_test / n_train) * sd * sd)
    t = mean / se if se > 0 else (0.0 if mean == 0 else math.copysign(math.inf, mean))
    return {"mean": mean, "sd": sd, "t": t, "p": float(2 * t_dist.sf(abs(t), R - 1)), "df": R - 1}


def mcnemar_power_min_difference(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference between two methods scored on the same n images that the
    exact McNemar test (`mcnemar_exact`) at `alpha` detects with probability `power`, when a
    fraction `discordance` of the images is right for one method and wrong for the other.

    Computed exactly, not with Connor's (1987) normal approximation: the number of discordant
    images is D ~ Binomial(n, discordance); given D, the images only A gets right are
    b ~ Binomial(D, q), and the test rejects when 2 * P(Binomial(D, 1/2) <= min(b, D - b)) <= alpha.
    The accuracy difference is discordance * (2q - 1); q is found where the power, summed over D,
    reaches `power`. inf when no difference can be detected (too few discordant images: with
    alpha = 0.05 the exact test needs at least 6). Agrees with Connor's formula within a few
    percent from n = 250; as discordance nears 1 (D nearly fixed) it zig-zags with n, as exact
    tests' power does."""
    from scipy.optimize import brentq
    from scipy.stats import binom

    if not 0 <= discordance <= 1 or not 0 < alpha < power < 1:
        raise ValueError("need 0 <= discordance <= 1 and 0 < alpha < power < 1")
    if n <= 0 or discordance == 0:
        return math.inf
    lo, hi = binom.ppf(1e-12, n, discordance), binom.isf(1e-12, n, discordance)
    D = np.arange(int(lo), int(hi) + 1)
    weight = binom.pmf(D, n, discordance)
    c = binom.ppf(alpha / 2, D, 0.5)  # reject b <= c or b >= D - c: c the largest b with P(B <= b) <= alpha/2
    c = np.where(binom.cdf(c, D, 0.5) <= alpha / 2 * (1 + 1e-9), c, c - 1)

    def power_at(q: float) -> float:
        return float(weight @ (binom.cdf(c, D, q) + binom.sf(D - c - 1, D, q)))

    if power_at(1.0) < power:
        return math.inf
    q = brentq(lambda q: power_at(q) - power, 0.5, 1.0, xtol=1e-10)
    return float(discordance * (2 * q - 1))


def mcnemar_min_detectable_any(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest accuracy difference the exact McNemar test at `alpha` can detect with probability
    `power` on n paired images, whatever the two methods' discordance: a lower bound on
    `mcnemar_power_min_difference`. The best case is every disagreement going one way (difference =
    discordance = d): the test then rejects iff the D ~ Binomial(n, d) discordant images number at
    least the exact test's minimum (6 at alpha = 0.05), and d is found where that has probability
    `power`. inf when n is below that minimum."""
    from scipy.optimize import brentq
    from scipy.stats import binom

    if not 0 < alpha < power < 1:
        raise ValueError("need 0 < alpha < power < 1")
    least = next(k for k in range(1, 1100) if 2 * 0.5 ** k <= alpha)  # k discordant, all one way: p = 2 / 2^k
    if n < least:
        return math.inf
    return float(brentq(lambda d: binom.sf(least - 1, n, d) - power, 1e-12, 1.0, xtol=1e-12))
