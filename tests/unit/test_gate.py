import pytest

from retrainer.core.gate import GateDecision, decide, improvement
from retrainer.spec import parse_spec


def spec(task="classification", primary="roc_auc", thresholds=None, min_improvement=0.0):
    return parse_spec(
        {
            "name": "m",
            "task": task,
            "data": {"train": "x.csv", "target": "y"},
            "model": {"estimator": "sklearn.linear_model.LogisticRegression"},
            "gate": {
                "primary_metric": primary,
                "thresholds": thresholds or {},
                "min_improvement": min_improvement,
            },
        }
    )


def test_first_model_passes_on_thresholds_alone():
    d = decide(spec(thresholds={"roc_auc": {"min": 0.7}}), {"roc_auc": 0.8})
    assert d.passed and d.decision == "passed"
    assert "no champion yet" in d.reasons[0]
    assert d.checks[0].champion is None


def test_first_model_below_threshold_is_rejected():
    d = decide(spec(thresholds={"roc_auc": {"min": 0.75}}), {"roc_auc": 0.70})
    assert not d.passed
    assert d.reasons == ["roc_auc 0.7000 is below the threshold min 0.75"]


def test_higher_is_better_needs_improvement_over_champion():
    s = spec(thresholds={"roc_auc": {"min": 0.7}}, min_improvement=0.01)
    assert decide(s, {"roc_auc": 0.82}, {"roc_auc": 0.80}, "3").passed
    rejected = decide(s, {"roc_auc": 0.805}, {"roc_auc": 0.80}, "3")
    assert not rejected.passed
    assert (
        "vs champion v3 0.8000: improvement +0.0050 is less than min_improvement 0.01"
        in rejected.reasons[0]
    )


def test_lower_is_better_metrics_are_direction_aware():
    s = spec("regression", "rmse", thresholds={"rmse": {"max": 10}})
    assert decide(s, {"rmse": 5.0}, {"rmse": 6.0}, "1").passed  # lower rmse: better
    worse = decide(s, {"rmse": 7.0}, {"rmse": 6.0}, "1")
    assert not worse.passed and worse.checks[0].delta == pytest.approx(-1.0)
    above = decide(s, {"rmse": 11.0})
    assert not above.passed and "above the threshold max 10" in above.reasons[0]
    assert improvement("log_loss", 0.3, 0.4) == pytest.approx(0.1)
    assert improvement("r2", 0.3, 0.4) == pytest.approx(-0.1)


def test_equal_to_champion_passes_with_zero_min_improvement():
    assert decide(spec(), {"roc_auc": 0.8}, {"roc_auc": 0.8}, "1").passed


def test_secondary_thresholds_are_checked():
    s = spec(thresholds={"roc_auc": {"min": 0.7}, "recall": {"min": 0.5}})
    d = decide(s, {"roc_auc": 0.9, "recall": 0.4}, {"roc_auc": 0.8, "recall": 0.6}, "2")
    assert not d.passed
    assert [c.metric for c in d.checks] == ["roc_auc", "recall"]
    assert d.checks[0].passed and not d.checks[1].passed


def test_unscorable_champion_rejects():
    d = decide(spec(), {"roc_auc": 0.9}, None, "4", champion_error="KeyError: 'Age'")
    assert not d.passed and "champion v4 could not be scored" in d.reasons[0]


def test_decision_round_trips_and_renders():
    d = decide(
        spec(thresholds={"roc_auc": {"min": 0.7}}),
        {"roc_auc": 0.81, "f1": 0.5},
        {"roc_auc": 0.8},
        "1",
    )
    again = GateDecision.from_dict(d.to_dict())
    assert again == d
    assert "roc_auc" in d.table() and "+0.0100" in d.table()
    assert d.summary().startswith("Gate PASSED on roc_auc (champion v1)")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_metric_that_is_not_a_number_is_rejected_not_passed(bad):
    """NaN compares false with every bound and every margin: a candidate whose roc_auc is NaN
    (one mistyped label made the model three-class) passed the gate before."""
    first = decide(spec(thresholds={"roc_auc": {"min": 0.75}}), {"roc_auc": bad})
    assert not first.passed and first.decision == "rejected"
    assert first.reasons[0].startswith(f"roc_auc: the candidate's value on the test split is {bad}")
    assert not first.checks[0].passed
    vs_champion = decide(spec(), {"roc_auc": bad}, {"roc_auc": 0.9}, "3")
    assert not vs_champion.passed
    champion_unmeasured = decide(spec(), {"roc_auc": 0.8}, {"roc_auc": bad}, "3")
    assert not champion_unmeasured.passed
    assert "the champion's value on the test split is" in champion_unmeasured.reasons[0]
