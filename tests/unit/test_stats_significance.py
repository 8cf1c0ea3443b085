"""Drift significance: bucket tests against scipy, exact Monte-Carlo null, BH, the monitor's rule."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from retrainer.core.multiplicity import benjamini_hochberg, holm
from retrainer.core.significance import (
    bucket_test,
    counts_from_shares,
    drift_rule,
    persistent,
    weighted_drift,
)

# --- multiplicity ----------------------------------------------------------------------------

PS = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5, 0.049, 0.0001]


def test_holm_and_bh_equal_statsmodels_and_scipy():
    from statsmodels.stats.multitest import multipletests

    assert holm(PS) == pytest.approx(multipletests(PS, method="holm")[1])
    assert benjamini_hochberg(PS) == pytest.approx(multipletests(PS, method="fdr_bh")[1])
    assert benjamini_hochberg(PS) == pytest.approx(stats.false_discovery_control(PS))


def test_nan_p_values_are_not_tests():
    got = holm([0.01, math.nan, 0.02])
    assert math.isnan(got[1])
    assert got[[0, 2]] == pytest.approx(holm([0.01, 0.02]))
    assert benjamini_hochberg([]).size == 0


def test_p_values_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


# --- bucket tests ----------------------------------------------------------------------------


def test_chi2_and_g_test_equal_scipy():
    ref, cur = [400, 300, 200, 100, 0], [40, 35, 15, 10, 0]
    table = np.array([ref[:4], cur[:4]])  # the empty bucket is dropped
    chi = bucket_test(ref, cur)
    want = stats.chi2_contingency(table, correction=False)
    assert chi.method == "chi2" and chi.buckets == 4 and chi.dof == 3
    assert chi.statistic == pytest.approx(want[0]) and chi.p_value == pytest.approx(want[1])
    g = bucket_test(ref, cur, method="g_test")
    want_g = stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
    assert g.statistic == pytest.approx(want_g[0]) and g.p_value == pytest.approx(want_g[1])


def test_two_sparse_buckets_use_fisher_exact():
    t = bucket_test([990, 10], [198, 2 + 0])
    assert t.method == "fisher_exact"
    assert t.p_value == pytest.approx(stats.fisher_exact([[990, 10], [198, 2]]).pvalue)


def exact_conditional_p(ref, cur):
    """Exact p-value of Pearson's X^2 with both margins fixed, by enumerating every table."""
    col = np.array(ref) + np.array(cur)
    n_cur, n_ref = sum(cur), sum(ref)

    def x2(c):
        c = np.array(c, float)
        r = col - c
        e_c, e_r = col * n_cur / col.sum(), col * n_ref / col.sum()
        return np.sum((c - e_c) ** 2 / e_c + (r - e_r) ** 2 / e_r)

    observed = x2(cur)
    total = 0.0
    for c in itertools.product(*[range(min(k, n_cur) + 1) for k in col[:-1]]):
        last = n_cur - sum(c)
        if not 0 <= last <= col[-1]:
            continue
        table = (*c, last)
        prob = math.prod(math.comb(int(k), int(x)) for k, x in zip(col, table, strict=True))
        prob /= math.comb(int(col.sum()), n_cur)
        if x2(table) >= observed - 1e-9:
            total += prob
    return total


@pytest.mark.parametrize(
    "ref,cur", [([30, 12, 5, 2, 1], [3, 2, 3, 1, 1]), ([50, 20, 2, 1], [3, 1, 2, 2])]
)
def test_monte_carlo_matches_the_exact_conditional_p_value(ref, cur):
    t = bucket_test(ref, cur, seed=3, resolution=1e-4)
    exact = exact_conditional_p(ref, cur)
    assert t.method == "monte_carlo" and t.resamples >= 1000
    se = math.sqrt(exact * (1 - exact) / t.resamples)
    assert abs(t.p_value - exact) < 4 * se + 1e-4


def test_where_buckets_are_sparse_the_asymptotic_p_value_is_wrong():
    ref, cur = [50, 20, 2, 1], [3, 1, 2, 2]
    exact = exact_conditional_p(ref, cur)  # 0.0039
    asymptotic = bucket_test(ref, cur, method="chi2").p_value  # 0.0002: 20x too small
    assert asymptotic < exact / 5
    assert bucket_test(ref, cur).method == "monte_carlo"


def test_monte_carlo_draws_more_when_the_p_value_is_small():
    ref = np.array([200] * 10 + [5] * 40)
    cur = np.array([4] * 10 + [0] * 38 + [40, 40])  # two rare categories exploded
    t = bucket_test(ref, cur, resolution=1e-4)
    assert t.method == "monte_carlo" and t.resamples > 1000 and t.p_value < 1e-3


def test_monte_carlo_is_calibrated_on_a_sparse_50_category_column():
    rng = np.random.default_rng(0)
    shares = rng.dirichlet(np.ones(50) * 0.7)
    pvals = []
    for i in range(200):
        ref = rng.multinomial(4900, shares)
        cur = rng.multinomial(200, shares)
        pvals.append(bucket_test(ref, cur, seed=i, resolution=0.01).p_value)
    pvals = np.array(pvals)
    assert 0.03 <= np.mean(pvals <= 0.1) <= 0.17  # nominal 0.1, 200 draws: +-3.5 sd


def test_bucket_counts_must_line_up():
    with pytest.raises(ValueError, match="same buckets"):
        bucket_test([1, 2, 3], [1, 2])


def test_counts_from_shares_round_trips():
    counts = np.array([17, 0, 3, 80])
    assert counts_from_shares(counts / counts.sum(), int(counts.sum())).tolist() == counts.tolist()


# --- the monitor's rule ----------------------------------------------------------------------


def test_drift_needs_psi_and_significance_and_a_feature_in_the_trigger():
    rng = np.random.default_rng(1)
    base = np.array([100] * 10)
    counts = {
        "shifted": (base * 30, np.array([60, 50, 40, 20, 10, 5, 5, 4, 3, 3])),  # large, real
        "noisy": (np.array([1] * 50) * 98, rng.multinomial(200, np.ones(50) / 50)),
        "day_index": (base * 30, np.array([0] * 9 + [200])),  # drifts by construction
        "broken": (base * 30, base * 2),
    }
    psi = {"shifted": 0.9, "noisy": 0.27, "day_index": 5.0, "broken": float("nan")}
    res = drift_rule(counts, psi, psi_limit=0.25, fdr=0.01, excluded=["day_index"])
    f = res.features
    assert f["shifted"].drifted and f["shifted"].significant
    assert f["noisy"].large and not f["noisy"].significant and not f["noisy"].drifted
    assert f["day_index"].large and not f["day_index"].in_trigger and not f["day_index"].drifted
    assert f["broken"].test is None and not f["broken"].drifted
    assert res.drifted == ["shifted"] and res.large_only == ["noisy"]
    assert f["noisy"].noise_floor == pytest.approx(49 * (1 / 200 + 1 / 4900))
    # BH across the three tested features in the trigger only
    ps = [f["shifted"].test.p_value, f["noisy"].test.p_value]
    assert [f["shifted"].p_adjusted, f["noisy"].p_adjusted] == pytest.approx(benjamini_hochberg(ps))
    assert res.to_dict()["drifted"] == ["shifted"]


def test_excluding_an_unknown_feature_is_an_error():
    with pytest.raises(ValueError, match="not among the monitored features"):
        drift_rule({"a": ([1, 2], [1, 2])}, {"a": 0.0}, 0.25, excluded=["b"])


def test_persistent_and_weighted_drift():
    hist = [{"a", "b"}, {"a"}, {"a", "c"}]
    assert persistent(hist, 1) == ["a", "c"]
    assert persistent(hist, 3) == ["a"]
    assert persistent(hist[:1], 2) == []
    assert weighted_drift({"a": 0.4, "b": 0.0, "c": None}, {"a": 3.0, "b": 1.0}) == pytest.approx(
        0.3
    )
