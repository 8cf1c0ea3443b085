"""Training-time importance and calibration, the label-free estimate, max_estimated_drop."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from credit_spec import CAT, NUM, credit_spec

from retrainer.core.cbpe import estimated_drop
from retrainer.core.drift import ReferenceProfile, build_profile, compare_to_profile
from retrainer.core.evaluation import compute_metrics, reference_extras
from retrainer.core.training import fit_pipeline, split_frame
from retrainer.steps.monitor.decision import RETRAIN, WARN, LabelCheck, decide
from retrainer.steps.monitor.measure import label_free_estimate

ROOT = Path(__file__).resolve().parents[2]


def spec(**monitoring):
    return credit_spec({"primary_metric": "roc_auc"}, monitoring)


@pytest.fixture(scope="module")
def champion():
    df = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    shifted = df[(df["Age"] >= 40) & (df["Amount"] >= 1000)]
    base = df.drop(shifted.index)
    s = spec()
    train, test = split_frame(base, s)
    model = fit_pipeline(s, train, NUM, CAT)
    profile = build_profile(train, NUM, CAT, 10)
    extras = reference_extras(s, model, test, NUM, CAT)
    profile.importance = extras["importance"]
    profile.calibration = extras["calibration"]
    profile.reference_metric = extras["reference_metric"]
    return s, model, profile, test, shifted


def served(model, frame):
    """A window as the serving API logs it: the features, _prediction and _score."""
    from retrainer.core.training import prepare_features

    X = prepare_features(frame, NUM, CAT)
    proba = model.predict_proba(X)
    pred = model.classes_[proba.argmax(axis=1)]
    return frame.assign(_prediction=pred, _score=proba.max(axis=1))


def test_reference_extras_and_the_profile_round_trip(champion):
    s, model, profile, test, _ = champion
    assert set(profile.importance) == set(NUM + CAT)
    assert all(v >= 0 for v in profile.importance.values())
    assert max(profile.importance, key=profile.importance.get) in NUM + CAT
    ref = profile.reference_metric
    assert ref["metric"] == "roc_auc" and ref["positive"] == "bad"
    assert ref["value"] == pytest.approx(compute_metrics(s, model, test, NUM, CAT)["roc_auc"])
    again = ReferenceProfile.from_dict(profile.to_dict())
    assert again.calibration == profile.calibration and again.importance == profile.importance
    old = {k: v for k, v in profile.to_dict().items() if k not in ("importance", "calibration")}
    assert ReferenceProfile.from_dict(old).calibration is None  # profiles from before load


def test_the_estimate_on_the_calibration_rows_is_the_reference(champion):
    s, model, profile, test, _ = champion
    est = label_free_estimate(spec(min_rows=100), profile, served(model, test))
    assert est is not None and est["metric"] == "roc_auc"
    assert est["estimated"] == pytest.approx(profile.reference_metric["value"], abs=0.02)
    assert "covariate shift" in est["assumption"]
    assert label_free_estimate(s, profile, test) is None  # no logged scores: no estimate


def test_max_estimated_drop_holds_a_drift_retrain_that_costs_nothing(champion):
    s, model, profile, _, shifted = champion
    window = served(model, shifted.sample(300, random_state=0))
    drift = compare_to_profile(profile, window.drop(columns=["_prediction", "_score"]))
    est = label_free_estimate(spec(max_estimated_drop=0.5), profile, window)
    assert not est["exceeds"]
    held = decide(spec(max_estimated_drop=0.5), drift, 300, estimate=est)
    assert held.decision == WARN and "label-free estimate of roc_auc" in held.reasons[-1]
    assert held.estimate == est
    big = estimated_drop("roc_auc", 0.85, 0.70, 300, limit=0.05)
    assert decide(spec(max_estimated_drop=0.05), drift, 300, estimate=big.to_dict()).decision == (
        RETRAIN
    )
    assert decide(spec(), drift, 300, estimate=est).decision == RETRAIN  # no limit: drift decides


def test_delayed_labels_decide_over_the_estimate(champion):
    _, _, profile, _, shifted = champion
    drift = compare_to_profile(profile, shifted.sample(300, random_state=0))
    optimistic = estimated_drop("roc_auc", 0.85, 0.84, 300, limit=0.05).to_dict()
    labels = LabelCheck(rows=300, metric="roc_auc", value=0.70, threshold=0.6)
    d = decide(spec(max_estimated_drop=0.05), drift, 300, labels=labels, estimate=optimistic)
    assert d.decision == RETRAIN  # measured drop 0.15 >= 0.05, whatever the estimate says
    fine = LabelCheck(rows=300, metric="roc_auc", value=0.84, threshold=0.6)
    d2 = decide(spec(max_estimated_drop=0.05), drift, 300, labels=fine, estimate=optimistic)
    assert d2.decision == WARN and "labelled rows" in d2.reasons[-1]
    assert np.isfinite(d2.max_psi)


def test_cross_fitted_calibration_is_the_default_and_estimates_the_shift_better(champion):
    from sklearn.metrics import roc_auc_score

    s, model, profile, test, shifted = champion
    df = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    train, _ = split_frame(df.drop(shifted.index), s)
    assert s.monitoring.calibration == "cross_fitted"
    crossed = reference_extras(s, model, test, NUM, CAT, train)["calibration"]
    only_test = spec(calibration="test_split")
    assert reference_extras(only_test, model, test, NUM, CAT, train)["calibration"] == (
        profile.calibration
    )
    assert profile.calibration["rows"] == len(test)
    assert crossed["rows"] == len(train) + len(test)  # out-of-fold scores on every training row
    window = served(model, shifted)
    bad = list(model.classes_).index("bad")
    proba = model.predict_proba(window[NUM + CAT])[:, bad]
    realised = roc_auc_score(shifted["Status"] == "bad", proba)
    errors = {}
    for name, calibration in (("crossed", crossed), ("test", profile.calibration)):
        p = ReferenceProfile.from_dict({**profile.to_dict(), "calibration": calibration})
        est = label_free_estimate(spec(min_rows=100), p, window)
        errors[name] = abs(est["estimated"] - realised)
    assert errors["crossed"] < errors["test"], errors
    print(f"roc_auc on all {len(shifted)} shifted rows: realised {realised:.4f}, errors {errors}")


def test_outside_the_reference_support_the_estimate_does_not_hold_a_retrain(champion):
    """The demo's shifted traffic (a corner no training row is in) leaves the reference rows'
    support: the estimate is reported but not trusted, so a drift retrain is not held back by
    it; held-out rows of the base population stay within it."""
    import json
    from importlib import resources

    from jsonschema import validate

    s, model, profile, test, shifted = champion
    df = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    train, _ = split_frame(df.drop(shifted.index), s)
    lenient = spec(max_estimated_drop=0.5, min_rows=100)
    inside = label_free_estimate(lenient, profile, served(model, test), lambda: train)
    assert inside["support"]["within"] and inside["support"]["outside_share"] < 0.1
    window = served(model, shifted.sample(300, random_state=0))
    outside = label_free_estimate(lenient, profile, window, lambda: train)
    sup = outside["support"]
    assert not sup["within"] and sup["outside_share"] >= 0.2 and sup["limit"] == 0.1
    assert sup["rows"] == 300 and sup["reference_rows"] == len(train)
    assert not outside["exceeds"]  # the estimate alone would hold the retrain back
    drift = compare_to_profile(profile, window.drop(columns=["_prediction", "_score"]))
    d = decide(lenient, drift, 300, estimate=outside)
    assert d.decision == RETRAIN and "not trusted" in d.reasons[-1], d.reasons
    assert "outside the reference's support" in d.summary() and "not trusted" in d.summary()
    schema = resources.files("retrainer.core").joinpath("schemas/monitor_decision.schema.json")
    validate(d.to_dict(), json.loads(schema.read_text()))
    # delayed labels still decide over the estimate, trusted or not
    fine = LabelCheck(
        rows=300, metric="roc_auc", value=profile.reference_metric["value"], threshold=0.6
    )
    assert decide(lenient, drift, 300, labels=fine, estimate=outside).decision == WARN
    # no reference sample (a champion logged before the check existed): no support, as before
    assert "support" not in label_free_estimate(lenient, profile, window, lambda: None)
    # a wider limit trusts it again
    wide = spec(max_estimated_drop=0.5, min_rows=100, max_outside_support=0.9)
    trusted = label_free_estimate(wide, profile, window, lambda: train)
    assert (
        trusted["support"]["within"] and decide(wide, drift, 300, estimate=trusted).decision == WARN
    )


def test_the_models_page_summary_carries_the_estimate_and_its_trust():
    from retrainer.stores.overview import monitor_summary

    est = estimated_drop("roc_auc", 0.846, 0.871, 950, limit=None).to_dict()
    est["support"] = {"outside_share": 0.345, "limit": 0.1, "within": False}
    record = {"decision": "retrain", "estimate": est, "psi": {"Age": 6.2}}
    summary = monitor_summary(record, {"time": 0})["estimate"]
    assert summary == {
        "metric": "roc_auc",
        "estimated": 0.871,
        "reference": 0.846,
        "drop": pytest.approx(-0.025),
        "outside_share": 0.345,
        "trusted": False,
    }
    del est["support"]  # a champion without a reference sample: no check, trusted as before
    assert monitor_summary(record, {})["estimate"]["trusted"] is True
    assert monitor_summary({"decision": "ok"}, {})["estimate"] is None
