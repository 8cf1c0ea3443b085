"""Whether a `retrain` decision starts a retrain: the trigger policy as a plain function.

`plan_trigger` decides from facts (the decision, runs in flight, the last drift-triggered
retrain, the cooldown) and returns a TriggerPlan; the Airflow task only executes it (records the
action on the check's MLflow run, then triggers or skips). `last_trigger` reads the one fact
that lives in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from retrainer import constants as C
from retrainer.config.settings import Settings, get_settings
from retrainer.spec import ModelSpec, parse_duration
from retrainer.steps.monitor.checks import find_checks
from retrainer.steps.monitor.decision import RETRAIN

NONE, IN_FLIGHT, COOLDOWN, CAPPED, TRIGGERED = (
    "none",
    "in_flight",
    "cooldown",
    "capped",
    "triggered",
)


@dataclass(frozen=True)
class LastTrigger:
    """The last drift-triggered retrain: when its check started, and the retrain's run id."""

    at: datetime
    retrain_run_id: str


@dataclass(frozen=True)
class TriggerPlan:
    action: str  # none | in_flight | cooldown | capped | triggered
    detail: str
    retrain_run_id: str = ""
    conf: dict[str, Any] = field(default_factory=dict)

    @property
    def triggers(self) -> bool:
        return self.action == TRIGGERED


def plan_trigger(
    spec: ModelSpec,
    measured: dict[str, Any],
    monitor_dag_run_id: str,
    in_flight: int,
    last: LastTrigger | None,
    now: datetime,
    ignore_cooldown: bool = False,
    recent: list[datetime] | None = None,
) -> TriggerPlan:
    """Trigger on `retrain`, unless a retrain is queued or running, or one was triggered within
    monitoring.cooldown (which `ignore_cooldown` overrides; a retrain in flight still blocks),
    or monitoring.max_retrains drift retrains were triggered within its period (`recent`: when
    the drift retrains of that period were triggered; the cap holds even with ignore_cooldown)."""
    decision = measured["decision"]
    if decision["decision"] != RETRAIN:
        return TriggerPlan(NONE, decision["decision"])
    retrain_run_id = f"drift__{monitor_dag_run_id}"
    if last is not None and last.retrain_run_id == retrain_run_id:
        # A retry of this check's own trigger (the run may or may not exist yet): trigger the
        # same run id again; Airflow creates it at most once. Neither the in-flight count nor
        # the cooldown (both of which this check's first attempt set off) may swallow it.
        return TriggerPlan(
            TRIGGERED,
            f"retry of this check's trigger of {retrain_run_id} (created at most once)",
            retrain_run_id=retrain_run_id,
            conf=_trigger_conf(measured, monitor_dag_run_id),
        )
    if in_flight:
        return TriggerPlan(
            IN_FLIGHT, f"{spec.retrain_dag_id} already has {in_flight} run(s) in flight"
        )
    why = _cooldown(spec, last, now, ignore_cooldown)
    if why is not None:
        return TriggerPlan(COOLDOWN, why)
    why = _capped(spec, recent or [], now)
    if why is not None:
        return TriggerPlan(CAPPED, why)
    if last is None:
        detail = "no earlier drift-triggered retrain"
    elif ignore_cooldown and now - last.at < parse_duration(spec.monitoring.cooldown):
        until = (last.at + parse_duration(spec.monitoring.cooldown)).isoformat(timespec="seconds")
        detail = f"cooldown until {until} ignored for this run (ignore_cooldown)"
    else:
        detail = (
            f"last drift retrain at {last.at.isoformat(timespec='seconds')}, outside the cooldown"
        )
    return TriggerPlan(
        TRIGGERED,
        detail,
        retrain_run_id=retrain_run_id,
        conf=_trigger_conf(measured, monitor_dag_run_id),
    )


def _trigger_conf(measured: dict[str, Any], monitor_dag_run_id: str) -> dict[str, Any]:
    decision = measured["decision"]
    return {
        "reason": retrain_reason(decision)[:4000],
        "trigger": {
            "origin": "monitor",
            "monitor_run_id": monitor_dag_run_id,
            "mlflow_run_id": measured["mlflow_run_id"],
            "decision": decision["decision"],
            "features": decision["features"],
            "psi": decision["psi"],
            "window": decision.get("window") or {},
        },
    }


def _cooldown(
    spec: ModelSpec, last: LastTrigger | None, now: datetime, ignore_cooldown: bool
) -> str | None:
    """Why the cooldown holds this retrain, or None."""
    if last is None or ignore_cooldown:
        return None
    cooldown = parse_duration(spec.monitoring.cooldown)
    if now - last.at >= cooldown:
        return None
    until = (last.at + cooldown).isoformat(timespec="seconds")
    return (
        f"cooldown: {spec.retrain_dag_id} run {last.retrain_run_id or '?'} was triggered at "
        f"{last.at.isoformat(timespec='seconds')}; monitoring.cooldown {spec.monitoring.cooldown} "
        f"holds further drift retrains until {until}"
    )


def _capped(spec: ModelSpec, recent: list[datetime], now: datetime) -> str | None:
    """Why monitoring.max_retrains holds this retrain, or None."""
    cap = spec.monitoring.max_retrains
    if cap is None:
        return None
    since = now - parse_duration(cap.per)
    within = sorted(t for t in recent if t > since)
    if len(within) < cap.count:
        return None
    frees = (within[-cap.count] + parse_duration(cap.per)).isoformat(timespec="seconds")
    return (
        f"retrain cap: {len(within)} drift retrains of {spec.retrain_dag_id} were triggered since "
        f"{since.isoformat(timespec='seconds')} (the first at "
        f"{within[0].isoformat(timespec='seconds')}); monitoring.max_retrains allows "
        f"{cap.count} per {cap.per}, so none until {frees}"
    )


def recent_triggers(
    spec: ModelSpec, now: datetime, settings: Settings | None = None
) -> list[datetime]:
    """When the drift retrains within monitoring.max_retrains' period were triggered (none
    without a cap), from the monitor experiment in MLflow."""
    from retrainer.stores.tracking import mlflow_client

    cap = spec.monitoring.max_retrains
    if cap is None:
        return []
    settings = settings or get_settings()
    since_ms = int((now - parse_duration(cap.per)).timestamp() * 1000)
    runs = find_checks(
        mlflow_client(settings),
        spec,
        settings,
        f"tags.`{C.TAG_MONITOR_ACTION}` = '{TRIGGERED}' and attributes.start_time > {since_ms}",
        n=cap.count + 100,
    )
    return [datetime.fromtimestamp(r.info.start_time / 1000, UTC) for r in runs]


def last_trigger(spec: ModelSpec, settings: Settings | None = None) -> LastTrigger | None:
    """The last check that triggered a retrain, from the monitor experiment in MLflow."""
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    runs = find_checks(client, spec, settings, f"tags.`{C.TAG_MONITOR_ACTION}` = '{TRIGGERED}'")
    if not runs:
        return None
    return LastTrigger(
        datetime.fromtimestamp(runs[0].info.start_time / 1000, UTC),
        runs[0].data.tags.get(C.TAG_MONITOR_RETRAIN_RUN, ""),
    )


def retrain_reason(decision: dict[str, Any]) -> str:
    window = decision.get("window") or {}
    return (
        f"monitor: {'; '.join(decision['reasons'])} "
        f"(window {window.get('start') or 'beginning'} .. {window.get('end')}, {decision['rows']} rows)"
    )
