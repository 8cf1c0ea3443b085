"""Label-free performance estimate (CBPE): calibration, expected metrics, NannyML's formulas."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from retrainer.core.cbpe import (
    ASSUMPTION,
    Calibration,
    estimate,
    estimated_drop,
    expected_roc_auc,
    fit_calibration,
)


def scores(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    true_p = 1 / (1 + np.exp(-(1.5 * x - 0.5)))
    y = rng.random(n) < true_p
    raw = 1 / (1 + np.exp(-(0.8 * x)))  # a miscalibrated but well-ordered model
    return y, raw, true_p


def test_calibration_equals_sklearn_isotonic_and_round_trips():
    y, raw, _ = scores()
    cal = fit_calibration(y, raw)
    iso = IsotonicRegression(out_of_bounds="clip").fit(raw, y.astype(float))
    probe = np.concatenate([raw[:100], [-1.0, 2.0]])
    assert cal.apply(probe) == pytest.approx(iso.predict(probe), abs=1e-12)
    again = Calibration.from_dict(cal.to_dict())
    assert again.apply(probe) == pytest.approx(cal.apply(probe))


def test_calibration_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration([True, True, True], [0.1, 0.2, 0.3])


def test_expected_metrics_match_labels_drawn_from_the_probabilities():
    """With labels drawn from p, the realised metrics average to the estimates."""
    from retrainer.core.comparison import roc_auc

    _, raw, true_p = scores(n=3000, seed=1)
    pred = raw > 0.5
    est = estimate(true_p, pred, raw)
    rng = np.random.default_rng(2)
    ys = rng.random((300, true_p.size)) < true_p  # 300 label draws at once
    tp = (ys & pred).sum(axis=1)
    realised = {
        "accuracy": (ys == pred).mean(axis=1),
        "precision": tp / pred.sum(),
        "recall": tp / ys.sum(axis=1),
        "f1": 2 * tp / (pred.sum() + ys.sum(axis=1)),
        "roc_auc": np.array([roc_auc(y, raw) for y in ys]),
        "log_loss": -np.mean(ys * np.log(raw) + (~ys) * np.log(1 - raw), axis=1),
    }
    assert realised["f1"][0] == pytest.approx(skm.f1_score(ys[0], pred))
    assert realised["log_loss"][0] == pytest.approx(skm.log_loss(ys[0], np.c_[1 - raw, raw]))
    for k, v in realised.items():
        assert est[k] == pytest.approx(np.mean(v), abs=0.003), k


def nannyml_roc_auc(calibrated, raw):
    """NannyML 0.13's estimate_roc_auc, transcribed (the bench checks the library itself)."""
    order = np.argsort(raw)[::-1]
    p = calibrated[order]
    tps = np.cumsum(p)
    fps = 1 + np.arange(len(p)) - tps
    tps, fps = np.round(np.r_[0, tps], 5), np.round(np.r_[0, fps], 5)
    return skm.auc(fps / fps[-1], tps / tps[-1])


def test_roc_auc_estimate_equals_nannyml_formula_without_ties():
    y, raw, _ = scores(n=2000, seed=3)
    cal = fit_calibration(y, raw).apply(raw)
    assert expected_roc_auc(cal, raw) == pytest.approx(nannyml_roc_auc(cal, raw), abs=1e-6)


def test_tied_scores_are_one_step_whatever_their_order():
    raw = np.array([0.9, 0.7, 0.7, 0.7, 0.2, 0.1])
    p = np.array([0.95, 0.8, 0.1, 0.5, 0.3, 0.05])
    one = expected_roc_auc(p, raw)
    perm = np.array([0, 3, 1, 2, 4, 5])
    assert expected_roc_auc(p[perm], raw[perm]) == pytest.approx(one, abs=1e-15)


def test_estimated_drop_is_direction_aware():
    d = estimated_drop("roc_auc", 0.80, 0.76, rows=500, limit=0.03)
    assert d.drop == pytest.approx(0.04) and d.exceeds
    ll = estimated_drop("log_loss", 0.40, 0.42, rows=500, limit=0.05, lower_is_better=True)
    assert ll.drop == pytest.approx(0.02) and not ll.exceeds
    assert "covariate shift" in d.assumption == ASSUMPTION or "covariate shift" in d.assumption


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="cannot be estimated"):
        estimate([0.5], [True], metrics=["r2"])


def test_shift_weights_gate_cap_and_floor():
    from retrainer.core.cbpe import effective_rows, shift_weights

    rng = np.random.default_rng(0)
    cal = rng.normal(size=(3000, 3))
    same = shift_weights(cal, rng.normal(size=(500, 3)))
    assert same.weights is None and same.effective_rows >= 0.5 * 3000  # not shifted: keep it
    far = shift_weights(cal, rng.normal(loc=2.5, size=(500, 3)))
    w = far.weights
    assert w is not None and far.effective_rows < 0.5 * 3000
    assert w.mean() == pytest.approx(1.0) and w.max() <= 20.0 + 1e-9
    assert effective_rows(w) == pytest.approx(1000.0, rel=1e-3)  # mixed up to the floor
    # the rows nearest the window weigh most
    from scipy.stats import spearmanr

    assert spearmanr(w, cal.sum(axis=1)).statistic > 0.9
    assert effective_rows(np.ones(10)) == pytest.approx(10.0)


def test_reweighted_calibration_pools_repeats_and_equal_weights_change_nothing():
    from retrainer.core.cbpe import fit_calibration, reweighted_calibration

    rng = np.random.default_rng(1)
    score = rng.uniform(size=2000)
    positive = rng.uniform(size=2000) < score
    plain = fit_calibration(positive, score)
    same = reweighted_calibration(positive, score, np.full(2000, 3.0))
    assert same.x == pytest.approx(plain.x) and same.y == pytest.approx(plain.y)
    assert same.method.startswith("isotonic, reweighted")
    twice = reweighted_calibration(positive, np.column_stack([score, score]), np.ones(2000))
    assert twice.y == pytest.approx(plain.y) and twice.rows == 4000
    # weight only the high scores: the map is fitted where the weight is
    high = reweighted_calibration(positive, score, np.where(score > 0.5, 1.0, 1e-9))
    assert high.apply([0.9])[0] == pytest.approx(plain.apply([0.9])[0], abs=0.05)


def test_anchored_calibration_pools_models_on_different_scales():
    """Out-of-fold rows scored by other models (here on a squared scale) pooled with the
    champion's raw scores flatten the map and misstate the window's AUC; on the anchored scale
    (each score's percentile among its own model's test-split scores) they agree."""
    from retrainer.core.cbpe import anchor_of, anchored

    rng = np.random.default_rng(3)
    p_train, p_test, p_win = (rng.beta(1.2, 2.5, n) for n in (8000, 2000, 4000))
    y_train, y_test = rng.random(8000) < p_train, rng.random(2000) < p_test
    fold_train, fold_test = p_train**2, p_test**2  # the fold models' scale
    positive = np.concatenate([y_train, y_test])
    raw = fit_calibration(positive, np.concatenate([fold_train, p_test]))
    anchor = anchor_of(p_test)
    crossed = fit_calibration(
        positive,
        np.concatenate([anchored(fold_train, anchor_of(fold_test)), anchored(p_test, anchor)]),
        anchor=anchor,
    )
    truth = expected_roc_auc(p_win, p_win)  # the window's AUC, in expectation
    assert abs(expected_roc_auc(crossed.apply(p_win), p_win) - truth) < 0.005
    assert abs(expected_roc_auc(raw.apply(p_win), p_win) - truth) > 0.02
    again = Calibration.from_dict(crossed.to_dict())
    assert again.anchor == crossed.anchor and np.array_equal(
        again.apply(p_win), crossed.apply(p_win)
    )
    assert "anchor" not in raw.to_dict()  # profiles without an anchor keep their old shape


def test_anchor_is_bounded_and_ties_count_half():
    from retrainer.core.cbpe import ANCHOR_POINTS, anchor_of, anchored

    big = anchor_of(np.linspace(0, 1, 100_000))
    assert len(big) == ANCHOR_POINTS and big[0] == 0.0 and big[-1] == 1.0
    assert anchor_of([0.3, 0.1, 0.2]) == [0.1, 0.2, 0.3]
    assert anchored([0.0, 0.2, 0.25, 1.0], [0.1, 0.2, 0.2, 0.3]).tolist() == [0.0, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="no test-split scores"):
        anchor_of([])


def test_support_finds_a_window_outside_the_reference_and_takes_hostile_values():
    import pandas as pd

    from retrainer.core.cbpe import support

    rng = np.random.default_rng(5)
    n = 3000
    ref = pd.DataFrame(
        {
            "a": rng.normal(0, 1, n),
            "b": rng.normal(0, 1, n),
            "const": 1.0,
            "c": rng.choice(["x", "y", "z"], n),
        }
    )
    ref = ref[~((ref["a"] > 1) & (ref["b"] > 1))]  # a corner no reference row is in
    inside = ref.sample(500, random_state=1, replace=True)
    assert support(ref, inside, ["a", "b", "const"], ["c"], 0.1).within
    corner = pd.DataFrame(
        {"a": rng.uniform(1, 2, 500), "b": rng.uniform(1, 2, 500), "const": 1.0, "c": "x"}
    )
    outside = support(ref, corner, ["a", "b", "const"], ["c"], 0.1)
    assert not outside.within and outside.outside_share > 0.5
    assert outside.rows == 500 and outside.reference_rows == len(ref)
    hostile = inside.assign(
        a=np.where(np.arange(500) % 7 == 0, np.inf, inside["a"]),
        b=np.nan,  # a column that went missing
        c=[f"new-{i}" for i in range(500)],  # categories never seen
    )
    s = support(ref, hostile, ["a", "b", "const", "gone"], ["c", "gone_too"], 0.1)
    assert 0.0 <= s.outside_share <= 1.0 and not s.within  # unseen categories lie outside
    one = support(ref, inside.iloc[:1], ["a", "b"], ["c"], 0.1)
    assert one.rows == 1 and one.outside_share in (0.0, 1.0)
    big = pd.concat([inside] * 20, ignore_index=True)  # 10,000 rows: a sample of 5,000 is fitted
    assert support(ref, big, ["a", "b"], ["c"], 0.1).rows == 10_000
    with pytest.raises(ValueError, match="reference"):
        support(ref.iloc[:1], inside, ["a"], [], 0.1)
