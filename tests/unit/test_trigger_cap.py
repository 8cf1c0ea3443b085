"""The trigger policy as a plain function: cooldown, runs in flight and the retrain cap."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from retrainer.errors import SpecError
from retrainer.spec import parse_spec
from retrainer.steps.monitor.trigger import (
    CAPPED,
    COOLDOWN,
    IN_FLIGHT,
    NONE,
    TRIGGERED,
    LastTrigger,
    plan_trigger,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def spec(**monitoring):
    raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    raw["monitoring"] = {**raw["monitoring"], "cooldown": "1h", **monitoring}
    return parse_spec(raw)


def measured(decision="retrain"):
    return {
        "mlflow_run_id": "r1",
        "decision": {
            "decision": decision,
            "reasons": ["PSI of Age 0.4 >= 0.25"],
            "features": ["Age"],
            "psi": {"Age": 0.4},
            "rows": 400,
            "window": {"start": None, "end": NOW.isoformat(), "rows": 400},
        },
    }


def days_ago(*days):
    return [NOW - timedelta(days=d) for d in days]


def test_without_a_cap_drift_triggers():
    uncapped = spec(max_retrains=None)
    plan = plan_trigger(uncapped, measured(), "m1", 0, None, NOW, recent=days_ago(1, 2, 3, 4))
    assert plan.action == TRIGGERED and plan.retrain_run_id == "drift__m1"
    assert plan.conf["trigger"]["psi"] == {"Age": 0.4}


def test_the_cap_holds_with_a_clear_reason():
    capped = spec(max_retrains={"count": 3, "per": "7d"})
    last = LastTrigger(NOW - timedelta(days=1), "drift__x")
    plan = plan_trigger(capped, measured(), "m1", 0, last, NOW, recent=days_ago(1, 3, 6))
    assert plan.action == CAPPED and not plan.triggers
    assert "monitoring.max_retrains allows 3 per 7d" in plan.detail
    assert "3 drift retrains of credit_default_retrain" in plan.detail
    # The oldest of the three leaves the period 6 days ago + 7 days = tomorrow.
    assert (NOW + timedelta(days=1)).isoformat(timespec="seconds") in plan.detail


def test_retrains_outside_the_period_do_not_count():
    capped = spec(max_retrains={"count": 3, "per": "7d"})
    plan = plan_trigger(capped, measured(), "m1", 0, None, NOW, recent=days_ago(1, 3, 8, 20))
    assert plan.action == TRIGGERED


def test_the_cap_holds_even_when_the_cooldown_is_ignored():
    capped = spec(max_retrains={"count": 1, "per": "1d"})
    last = LastTrigger(NOW - timedelta(minutes=5), "drift__x")
    plan = plan_trigger(
        capped, measured(), "m1", 0, last, NOW, ignore_cooldown=True, recent=[last.at]
    )
    assert plan.action == CAPPED and "1 per 1d" in plan.detail


def test_order_of_reasons_in_flight_then_cooldown_then_cap():
    capped = spec(max_retrains={"count": 1, "per": "7d"})
    last = LastTrigger(NOW - timedelta(minutes=5), "drift__x")
    recent = [last.at]
    assert plan_trigger(capped, measured(), "m", 1, last, NOW, recent=recent).action == IN_FLIGHT
    assert plan_trigger(capped, measured(), "m", 0, last, NOW, recent=recent).action == COOLDOWN
    later = NOW + timedelta(hours=2)
    assert plan_trigger(capped, measured(), "m", 0, last, later, recent=recent).action == CAPPED
    assert plan_trigger(capped, measured("ok"), "m", 0, last, later, recent=recent).action == NONE


@pytest.mark.parametrize(
    "cap, expected",
    [
        ({"count": 0, "per": "7d"}, "monitoring.max_retrains.count"),
        ({"count": 3, "per": "weekly"}, "monitoring.max_retrains.per"),
        ({"count": 3}, "monitoring.max_retrains.per: required key is missing"),
    ],
)
def test_a_bad_cap_fails_loudly(cap, expected):
    with pytest.raises(SpecError, match=expected.replace(".", r"\.")):
        spec(max_retrains=cap)


def test_the_shipped_credit_spec_caps_drift_retrains():
    cap = spec().monitoring.max_retrains
    assert cap is not None and (cap.count, cap.per) == (3, "7d")
