"""The trigger policy as a plain function: one retrain per drift, and a retried trigger task
re-triggers its own run id instead of being swallowed by the in-flight count or the cooldown
its first attempt set off."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from retrainer.spec import load_spec
from retrainer.steps.monitor.trigger import (
    COOLDOWN,
    IN_FLIGHT,
    NONE,
    TRIGGERED,
    LastTrigger,
    plan_trigger,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "models" / "credit_default.yaml")  # cooldown 1d by default
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def measured(decision: str = "retrain") -> dict:
    return {
        "mlflow_run_id": "check-run",
        "decision": {
            "decision": decision,
            "reasons": ["PSI of Age 0.4 >= 0.25"],
            "features": ["Age"],
            "psi": {"Age": 0.4},
            "window": {"start": None, "end": NOW.isoformat()},
            "rows": 950,
        },
    }


def test_first_retrain_decision_triggers_a_run_named_after_the_check():
    plan = plan_trigger(SPEC, measured(), "scheduled__1", in_flight=0, last=None, now=NOW)
    assert plan.action == TRIGGERED and plan.retrain_run_id == "drift__scheduled__1"
    assert plan.conf["trigger"]["monitor_run_id"] == "scheduled__1"


def test_other_decisions_trigger_nothing():
    assert plan_trigger(SPEC, measured("warn"), "r", 0, None, NOW).action == NONE


def test_a_retrain_in_flight_blocks_another_check():
    plan = plan_trigger(SPEC, measured(), "manual__2", in_flight=1, last=None, now=NOW)
    assert plan.action == IN_FLIGHT and not plan.triggers


def test_an_earlier_checks_retrain_within_the_cooldown_blocks_another():
    last = LastTrigger(NOW - timedelta(hours=1), "drift__manual__1")
    plan = plan_trigger(SPEC, measured(), "manual__2", in_flight=0, last=last, now=NOW)
    assert plan.action == COOLDOWN and "drift__manual__1" in plan.detail


def test_a_retried_trigger_task_re_triggers_its_own_run_id():
    # The first attempt recorded "triggered" (so it is `last`, inside the cooldown), and its
    # run may already be queued (in flight): the retry must still trigger, with the same id,
    # which Airflow creates at most once.
    last = LastTrigger(NOW - timedelta(seconds=20), "drift__manual__1")
    for in_flight in (0, 1):
        plan = plan_trigger(SPEC, measured(), "manual__1", in_flight=in_flight, last=last, now=NOW)
        assert plan.action == TRIGGERED and plan.retrain_run_id == "drift__manual__1"
        assert "retry of this check's trigger" in plan.detail
