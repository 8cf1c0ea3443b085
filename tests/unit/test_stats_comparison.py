"""Paired gate statistics: metrics, DeLong, McNemar/Tango, paired t, bootstrap, decision, slices."""

import math
import time

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from retrainer.core import comparison as cmp
from retrainer.core.comparison import (
    CLASSIFICATION,
    REGRESSION,
    McNemarTest,
    Scored,
    compare,
    compare_slices,
    delong,
    paired_bootstrap,
    paired_test,
    point_metrics,
    slice_labels,
    tango_z,
)


def binary_pair(n=2000, seed=0, shift=0.8, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = y * shift + rng.normal(0, 1, n)
    b = y * (shift - 0.1) + rng.normal(0, 1, n)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    cand = Scored((pa > 0.5).astype(int), np.c_[1 - pa, pa])
    champ = Scored((pb > 0.5).astype(int), np.c_[1 - pb, pb])
    return y, cand, champ


def multiclass_pair(n=1500, k=3, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    out = []
    for noise in (1.0, 1.3):
        logits = np.eye(k)[y] * 1.5 + rng.normal(0, noise, (n, k))
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out.append(Scored(p.argmax(axis=1), p))
    return y, out[0], out[1]


def regression_pair(n=1000, seed=2):
    rng = np.random.default_rng(seed)
    y = rng.normal(10, 3, n)
    return y, Scored(y + rng.normal(0, 1.0, n)), Scored(y + rng.normal(0, 1.2, n))


# --- metric definitions equal sklearn's (what evaluation.compute_metrics reports) -----------


@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_equal_sklearn(ties):
    y, cand, _ = binary_pair(ties=ties)
    got = point_metrics("classification", CLASSIFICATION, y, cand)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, cand.proba[:, 1]), abs=1e-12)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, cand.pred), abs=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(y, cand.pred), abs=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(y, cand.pred), abs=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(y, cand.pred), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, cand.proba), abs=1e-12)


def test_positive_class_zero_is_honoured():
    y, cand, _ = binary_pair()
    got = point_metrics("classification", ["f1", "roc_auc"], y, cand, positive=0)
    assert got["f1"] == pytest.approx(skm.f1_score(y, cand.pred, pos_label=0), abs=1e-12)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 0, cand.proba[:, 0]))


def test_multiclass_metrics_equal_sklearn():
    y, cand, _ = multiclass_pair()
    got = point_metrics("classification", CLASSIFICATION, y, cand)
    assert got["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, cand.proba, multi_class="ovr"), abs=1e-12
    )
    for name, fn in [
        ("f1", skm.f1_score),
        ("precision", skm.precision_score),
        ("recall", skm.recall_score),
    ]:
        assert got[name] == pytest.approx(fn(y, cand.pred, average="macro"), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, cand.proba), abs=1e-12)


def test_regression_metrics_equal_sklearn():
    y, cand, _ = regression_pair()
    got = point_metrics("regression", REGRESSION, y, cand)
    assert got["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, cand.pred)))
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, cand.pred))
    assert got["r2"] == pytest.approx(skm.r2_score(y, cand.pred))


def test_every_resample_equals_sklearn_on_the_materialised_rows():
    """The weighted engine: one resample's metrics are sklearn's on the rows it drew."""
    y, cand, champ = binary_pair(n=400, ties=True)
    order, strata = cmp._strata("classification", y)
    y_s, c_s = y[order], cmp._take(cand, order)
    w = cmp._weights(np.random.default_rng(5), strata, 3, y.size)
    engine = cmp._Metrics("classification", y_s, c_s, 1, np.array([0, 1]))
    values = engine.evaluate(list(CLASSIFICATION), w)
    for b in range(3):
        rows = np.repeat(np.arange(y.size), w[b].astype(int))
        yy, pred, proba = y_s[rows], c_s.pred[rows], c_s.proba[rows]
        assert values["roc_auc"][b] == pytest.approx(skm.roc_auc_score(yy, proba[:, 1]), abs=1e-9)
        assert values["f1"][b] == pytest.approx(skm.f1_score(yy, pred), abs=1e-9)
        assert values["accuracy"][b] == pytest.approx(skm.accuracy_score(yy, pred), abs=1e-9)
        assert values["log_loss"][b] == pytest.approx(skm.log_loss(yy, proba), abs=1e-6)
        assert np.sum(yy) == np.sum(y)  # stratified: class counts kept


# --- DeLong ----------------------------------------------------------------------------------


def delong_brute_force(pos, a, b):
    """DeLong's covariance from its definition, with explicit pairwise comparisons (O(n^2))."""
    out = []
    for s in (a, b):
        x, yneg = s[pos], s[~pos]
        psi = (x[:, None] > yneg[None, :]) + 0.5 * (x[:, None] == yneg[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = out
    m, n = pos.sum(), (~pos).sum()
    s10 = np.cov(np.vstack([v10a, v10b]))
    s01 = np.cov(np.vstack([v01a, v01b]))
    s = s10 / m + s01 / n
    return auc_a, auc_b, s


@pytest.mark.parametrize("ties", [False, True])
def test_delong_equals_its_definition(ties):
    y, cand, champ = binary_pair(n=300, ties=ties, seed=3)
    pos = y == 1
    d = delong(pos, cand.proba[:, 1], champ.proba[:, 1])
    auc_a, auc_b, s = delong_brute_force(pos, cand.proba[:, 1], champ.proba[:, 1])
    assert d.auc_a == pytest.approx(auc_a, abs=1e-12)
    assert d.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert [d.var_a, d.var_b, d.cov_ab] == pytest.approx([s[0, 0], s[1, 1], s[0, 1]], rel=1e-9)
    se = math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    assert d.z == pytest.approx((auc_a - auc_b) / se, rel=1e-9)
    assert d.p_two_sided == pytest.approx(2 * stats.norm.sf(abs(d.z)), rel=1e-9)


def test_delong_of_identical_scores_is_no_difference():
    y, cand, _ = binary_pair(n=200)
    d = delong(y == 1, cand.proba[:, 1], cand.proba[:, 1])
    assert d.delta == 0 and d.se == 0 and d.z == 0 and d.p_two_sided == 1.0


def test_delong_is_fast_on_50000_rows():
    y, cand, champ = binary_pair(n=50_000, seed=4)
    delong(y == 1, cand.proba[:, 1], champ.proba[:, 1])  # warm up
    start = time.perf_counter()
    delong(y == 1, cand.proba[:, 1], champ.proba[:, 1])
    assert time.perf_counter() - start < 0.5  # 0.2 s budget measured by bench/gate_calibration


def test_delong_needs_both_classes():
    with pytest.raises(ValueError, match="at least 2 positive and 2 negative"):
        delong(np.array([True, False, False]), np.arange(3.0), np.arange(3.0))


# --- McNemar / Tango -------------------------------------------------------------------------


@pytest.mark.parametrize("b,c", [(12, 3), (5, 5), (0, 4), (40, 22), (90, 60)])
def test_mcnemar_p_values_equal_scipy_and_statsmodels(b, c):
    from statsmodels.stats.contingency_tables import mcnemar

    t = McNemarTest(b, c, 1000)
    if b + c < cmp.EXACT_MCNEMAR_BELOW:
        want = stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue if b else 1.0
        assert t.p_greater(0.0) == pytest.approx(want, rel=1e-12)
        exact = mcnemar([[0, b], [c, 0]], exact=True).pvalue
        assert cmp.mcnemar_p_two_sided(b, c) == pytest.approx(exact, rel=1e-9)
    else:
        z = (b - c) / math.sqrt(b + c)
        assert t.p_greater(0.0) == pytest.approx(stats.norm.sf(z), rel=1e-9)
        chi = mcnemar([[0, b], [c, 0]], exact=False, correction=False).pvalue
        assert cmp.mcnemar_p_two_sided(b, c) == pytest.approx(chi, rel=1e-9)


def test_tango_score_is_mcnemar_at_zero_and_its_bound_inverts_it():
    assert tango_z(30, 12, 500, 0.0) == pytest.approx((30 - 12) / math.sqrt(42))
    t = McNemarTest(30, 12, 500)
    low = t.lower(0.95)
    assert tango_z(30, 12, 500, low) == pytest.approx(stats.norm.ppf(0.95), abs=1e-7)
    assert -0.01 < low < t.estimate
    # the test and the bound agree: H0 at the bound is exactly at the edge of rejection
    assert t.p_greater(low) == pytest.approx(0.05, abs=1e-6)
    # monotone in delta0
    zs = [tango_z(30, 12, 500, d) for d in np.linspace(-0.1, 0.1, 21)]
    assert all(a > b for a, b in zip(zs, zs[1:], strict=False))


def test_tango_variance_is_the_restricted_mle():
    """The restricted MLE solves the score equations: check against a numeric maximisation."""
    from scipy import optimize

    b, c, n, d0 = 25, 10, 300, 0.02

    def negloglik(q):  # q = P(champion only right); P(candidate only right) = q + d0
        p12, p21 = q + d0, q
        p_same = 1 - p12 - p21
        return -(b * np.log(p12) + c * np.log(p21) + (n - b - c) * np.log(p_same))

    q_hat = optimize.minimize_scalar(
        negloglik, bounds=(1e-9, (1 - d0) / 2 - 1e-9), method="bounded"
    ).x
    z_manual = (b - c - n * d0) / math.sqrt(n * (2 * q_hat + d0 * (1 - d0)))
    assert tango_z(b, c, n, d0) == pytest.approx(z_manual, rel=1e-5)


# --- paired t and the delta method -----------------------------------------------------------


def test_paired_t_equals_scipy():
    y, cand, champ = regression_pair()
    test = paired_test("regression", "mae", y, cand, champ)
    d = np.abs(champ.pred - y) - np.abs(cand.pred - y)
    assert test.estimate == pytest.approx(d.mean())
    assert test.p_greater(0.0) == pytest.approx(
        stats.ttest_rel(np.abs(champ.pred - y), np.abs(cand.pred - y), alternative="greater").pvalue
    )
    assert test.p_greater(0.05) == pytest.approx(
        stats.ttest_1samp(d, 0.05, alternative="greater").pvalue
    )
    assert test.p_less(-0.05) == pytest.approx(
        stats.ttest_1samp(d, -0.05, alternative="less").pvalue
    )


def test_r2_and_rmse_tests_estimate_the_metric_difference():
    y, cand, champ = regression_pair()
    r2 = paired_test("regression", "r2", y, cand, champ)
    assert r2.estimate == pytest.approx(skm.r2_score(y, cand.pred) - skm.r2_score(y, champ.pred))
    rmse = paired_test("regression", "rmse", y, cand, champ)
    want = math.sqrt(skm.mean_squared_error(y, champ.pred)) - math.sqrt(
        skm.mean_squared_error(y, cand.pred)
    )
    assert rmse.estimate == pytest.approx(want)
    boot = paired_bootstrap("regression", ["rmse", "r2"], y, cand, champ, resamples=2000)
    assert rmse.se == pytest.approx(np.std(boot["rmse"]), rel=0.15)
    assert r2.se == pytest.approx(np.std(boot["r2"]), rel=0.15)


def test_log_loss_test_is_a_paired_t_on_row_losses():
    y, cand, champ = binary_pair()
    t = paired_test("classification", "log_loss", y, cand, champ)
    assert t.estimate == pytest.approx(
        skm.log_loss(y, champ.proba) - skm.log_loss(y, cand.proba), abs=1e-12
    )


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_is_seeded_and_agrees_with_the_analytic_errors():
    y, cand, champ = binary_pair(n=3000)
    one = paired_bootstrap("classification", ["roc_auc", "accuracy"], y, cand, champ, seed=7)
    two = paired_bootstrap("classification", ["roc_auc", "accuracy"], y, cand, champ, seed=7)
    assert np.array_equal(one["roc_auc"], two["roc_auc"])
    d = delong(y == 1, cand.proba[:, 1], champ.proba[:, 1])
    assert np.std(one["roc_auc"]) == pytest.approx(d.se, rel=0.1)
    ok_c, ok_h = cand.pred == y, champ.pred == y
    b, c, n = np.sum(ok_c & ~ok_h), np.sum(~ok_c & ok_h), y.size
    analytic = math.sqrt((b + c) / n**2 - (b - c) ** 2 / n**3)
    assert np.std(one["accuracy"]) == pytest.approx(analytic, rel=0.1)


def test_bootstrap_needs_at_least_1000_resamples():
    y, cand, champ = binary_pair(n=100)
    with pytest.raises(ValueError, match="at least 1000"):
        paired_bootstrap("classification", ["f1"], y, cand, champ, resamples=500)


# --- the decision ----------------------------------------------------------------------------


def test_identical_models_pass_non_inferiority_and_fail_superiority():
    y, cand, _ = binary_pair(n=3000)
    ni = compare("classification", ["roc_auc", "accuracy"], y, cand, cand, margin=0.01)
    sup = compare(
        "classification", ["roc_auc", "accuracy"], y, cand, cand, comparison="superiority"
    )
    for m in ("roc_auc", "accuracy"):
        assert ni.metrics[m].improvement == 0
        assert ni.metrics[m].passed, ni.metrics[m].reason()
        assert not sup.metrics[m].passed, sup.metrics[m].reason()


def test_confidence_half_is_the_point_rule():
    y, cand, champ = binary_pair(n=1000)
    res = compare(
        "classification",
        ["roc_auc", "accuracy", "log_loss", "f1"],
        y,
        cand,
        champ,
        comparison="superiority",
        margin=0.005,
        confidence=0.5,
    )
    for m, r in res.metrics.items():
        if r.method in ("delong", "paired_t_log_loss"):
            assert r.lower == pytest.approx(r.improvement, abs=1e-12)
        assert r.passed == (r.improvement > 0.005), m


def test_a_clearly_worse_candidate_is_rejected_and_the_record_says_why():
    y, cand, champ = binary_pair(n=3000)
    res = compare("classification", CLASSIFICATION, y, champ, cand, margin=0.005)
    auc = res.metrics["roc_auc"]
    assert not auc.passed and auc.method == "delong" and auc.improvement < 0
    assert "does not clear the non_inferiority bar -0.005" in auc.reason()
    lo, hi = auc.bootstrap_interval
    assert lo < auc.improvement < hi
    record = res.to_dict()
    assert record["resamples"] == 2000 and record["metrics"]["accuracy"]["test"]["method"]
    assert set(record["metrics"]) == set(CLASSIFICATION)


def test_bootstrap_decides_where_no_standard_test_exists():
    y, cand, champ = multiclass_pair()
    res = compare("classification", ["roc_auc", "f1", "accuracy"], y, cand, champ)
    assert res.metrics["roc_auc"].method == "bootstrap"  # multiclass: no DeLong
    assert res.metrics["f1"].method == "bootstrap"
    assert res.metrics["accuracy"].method.startswith("mcnemar")


def test_lower_is_better_metrics_are_direction_aware():
    y, cand, champ = regression_pair()
    res = compare("regression", REGRESSION, y, cand, champ, comparison="superiority")
    assert res.metrics["rmse"].improvement > 0  # the candidate has the smaller error
    assert res.metrics["rmse"].passed and res.metrics["mae"].passed and res.metrics["r2"].passed
    worse = compare("regression", REGRESSION, y, champ, cand)
    assert not any(r.passed for r in worse.metrics.values())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"comparison": "better"}, "superiority or non_inferiority"),
        ({"margin": -0.1}, "margin"),
        ({"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_settings_say_what_was_expected(kwargs, match):
    y, cand, champ = binary_pair(n=100)
    with pytest.raises(ValueError, match=match):
        compare("classification", ["accuracy"], y, cand, champ, **kwargs)


def test_predictions_on_other_rows_are_refused():
    y, cand, champ = binary_pair(n=100)
    with pytest.raises(ValueError, match="same rows"):
        compare("classification", ["accuracy"], y[:50], cand, champ)


def test_full_gate_on_3000_rows_is_quick():
    y, cand, champ = binary_pair(n=3000)
    start = time.perf_counter()
    compare("classification", CLASSIFICATION, y, cand, champ)
    assert time.perf_counter() - start < 5


# --- slices ----------------------------------------------------------------------------------


def test_a_harmed_slice_blocks_and_holm_is_applied():
    rng = np.random.default_rng(11)
    n = 3000
    y = rng.integers(0, 2, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    base = y * 1.2 + rng.normal(0, 1, n)
    cand_s = base + rng.normal(0, 0.3, n)
    champ_s = base + rng.normal(0, 0.3, n)
    west = region == "west"
    cand_s[west] = y[west] * 0.2 + rng.normal(0, 1, west.sum())  # much worse in the west

    def to_scored(s):
        p = 1 / (1 + np.exp(-s))
        return Scored((s > 0.6).astype(int), np.c_[1 - p, p])

    rep = compare_slices(
        "classification",
        "roc_auc",
        y,
        to_scored(cand_s),
        to_scored(champ_s),
        region,
        column="region",
        slice_margin=0.01,
        min_rows=100,
    )
    by = {s.slice: s for s in rep.slices}
    assert rep.blocked and by["west"].harmed
    assert not any(by[k].harmed for k in ("north", "south", "east"))
    ps = [by[k].p_harm for k in sorted(by)]
    from statsmodels.stats.multitest import multipletests

    want = multipletests(ps, method="holm")[1]
    assert [by[k].p_harm_holm for k in sorted(by)] == pytest.approx(want)
    assert rep.to_dict()["blocked"] is True


def test_small_and_one_class_slices_are_not_tested_but_recorded():
    y, cand, champ = binary_pair(n=600)
    groups = np.array(["big"] * 500 + ["small"] * 100)
    y = y.copy()
    groups[:50] = "pure"
    y[:50] = 1
    rep = compare_slices(
        "classification", "roc_auc", y, cand, champ, groups, min_rows=40, slice_margin=0.0
    )
    by = {s.slice: s for s in rep.slices}
    assert "one" in by["pure"].note or "positive" in by["pure"].note
    assert by["pure"].p_harm is None and not by["pure"].harmed
    rep2 = compare_slices("classification", "accuracy", y, cand, champ, groups, min_rows=200)
    by2 = {s.slice: s for s in rep2.slices}
    assert by2["small"].note.startswith("100 rows < min_rows 200")


def test_slice_labels_for_categories_numbers_and_nulls():
    assert list(slice_labels(["a", None, "b"])) == ["a", "<null>", "b"]
    got = slice_labels([1.0, 5.0, 10.0, float("nan")], bins=[2.0, 6.0])
    assert list(got) == ["(-inf, 2]", "(2, 6]", "(6, +inf]", "<null>"]
    q = slice_labels(np.arange(100.0), bins=4)
    assert len(set(q)) == 4
