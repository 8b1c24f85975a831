"""The statistics in runs.metrics against published examples, scipy and hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.runs.metrics import corrected_resampled_t, holm, mcnemar_exact, mcnemar_power_min_difference, wilson


def test_wilson_bounds_hold_the_estimate_exactly_and_stay_in_0_1():
    for n in range(1, 401):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            lo, hi = wilson(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0, (k, n, lo, hi)
            assert (k / n - lo) >= 0 and (hi - k / n) >= 0  # error bars matplotlib accepts
        assert wilson(n, n)[1] == 1.0 and wilson(0, n)[0] == 0.0
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (13, 13), (3, 10), (20, 20), (117, 153), (0, 1), (1, 1)])
def test_wilson_is_scipys_wilson_interval(k, n):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    np.testing.assert_allclose(wilson(k, n), (ci.low, ci.high), atol=1e-9)


def test_holm_on_textbook_examples():
    # Wikipedia, Holm-Bonferroni method: p = .01, .04, .03, .005 at alpha .05 rejects H1 and H4 only
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # R: p.adjust(c(.01, .02, .03, .04, .05), "holm")
    np.testing.assert_allclose(holm([0.01, 0.02, 0.03, 0.04, 0.05]), [0.05, 0.08, 0.09, 0.09, 0.09])
    assert holm([0.3, 0.5]) == [0.6, 0.6] and holm([0.7, 0.9]) == [1.0, 1.0] and holm([]) == []
    assert holm([0.02, 0.02]) == [0.04, 0.04]  # ties


def test_corrected_resampled_t_by_hand():
    d = [0.02, 0.03, 0.01, 0.04, 0.00]  # mean .02, sample variance (0 + 1 + 1 + 4 + 4)e-4 / 4 = 2.5e-4
    r = corrected_resampled_t(d, n_train=90, n_test=10)
    t = 0.02 / math.sqrt((1 / 5 + 10 / 90) * 2.5e-4)  # = 2.2678
    assert r["mean"] == pytest.approx(0.02) and r["sd"] == pytest.approx(math.sqrt(2.5e-4)) and r["df"] == 4
    assert r["t"] == pytest.approx(t) and t == pytest.approx(2.2678, abs=1e-4)
    assert r["p"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert 0.05 < r["p"] < 0.10  # t tables, 4 df: 2.132 (two-sided .10) < t < 2.776 (two-sided .05)
    # no overlap (n_test = 0): the ordinary one-sample t-test
    plain = stats.ttest_1samp(d, 0.0)
    got = corrected_resampled_t(d, n_train=90, n_test=0)
    assert got["t"] == pytest.approx(plain.statistic) and got["p"] == pytest.approx(plain.pvalue)
    assert corrected_resampled_t([0.01, 0.01], 9, 1)["p"] == 0.0  # no spread, a real difference
    assert corrected_resampled_t([0.0, 0.0], 9, 1)["p"] == 1.0
    with pytest.raises(ValueError):
        corrected_resampled_t([0.1], 9, 1)


def test_mcnemar_exact_one_sided_discordance():
    a = np.array([True] * 8 + [True, False] * 5)
    b = np.array([False] * 8 + [True, False] * 5)
    r = mcnemar_exact(a, b)
    assert (r["only_a"], r["only_b"]) == (8, 0) and r["p_value"] == pytest.approx(2 * 0.5 ** 8, rel=1e-12)
    assert mcnemar_exact(b, a)["p_value"] == pytest.approx(0.0078125, rel=1e-12)
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_mcnemar_detectable_difference_shrinks_with_more_images():
    for psi in (0.05, 0.1, 0.3):
        v = [mcnemar_power_min_difference(n, psi) for n in range(20, 401, 7)]
        finite = [x for x in v if math.isfinite(x)]
        assert finite and all(b <= a for a, b in zip(finite, finite[1:])), psi
        assert v.index(finite[0]) + len(finite) == len(v)  # once detectable, detectable with more images
    assert mcnemar_power_min_difference(4000, 0.1) < mcnemar_power_min_difference(1000, 0.1) / 1.9  # ~ 1/sqrt(n)


def test_mcnemar_detectable_difference_sanity():
    # every image discordant: D = n, a plain exact binomial test of q = P(only A right | discordant)
    n = 20  # reject b <= 5 or b >= 15: 2 P(B <= 5) = .041 <= .05 < 2 P(B <= 6) = .115
    delta = mcnemar_power_min_difference(n, 1.0)
    q = (1 + delta) / 2
    assert stats.binom.cdf(5, n, q) + stats.binom.sf(14, n, q) == pytest.approx(0.8, abs=1e-8)
    # large n: Connor's (1987) normal approximation, n = (z_a sqrt(psi) + z_b sqrt(psi - d^2))^2 / d^2
    za, zb, psi, d = stats.norm.isf(0.025), stats.norm.isf(0.2), 0.1, mcnemar_power_min_difference(2000, 0.1)
    assert (za * math.sqrt(psi) + zb * math.sqrt(psi - d * d)) ** 2 / d ** 2 == pytest.approx(2000, rel=0.05)
    assert 0.019 < d < 0.021  # 2000 images, 10% discordant: ~2 points of accuracy
    assert mcnemar_power_min_difference(10, 0.2) == math.inf  # ~2 discordant images: the test cannot reject
    assert mcnemar_power_min_difference(244, 0.1, power=0.9) > mcnemar_power_min_difference(244, 0.1)
    with pytest.raises(ValueError):
        mcnemar_power_min_difference(100, 1.5)
