"""`<model>_monitor`: read the window, measure drift, report, and trigger a retrain on drift."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowSkipException

from retrainer.orchestration.common import model_dag, run_context, run_step, trigger_dag_run
from retrainer.spec import ModelSpec


def monitor_doc(spec: ModelSpec) -> str:
    mon = spec.monitoring
    cap = f"{mon.max_retrains.count} per {mon.max_retrains.per}" if mon.max_retrains else "none"
    return textwrap.dedent(
        f"""\
        ### Monitor `{spec.name}`
        Schedule `{mon.schedule}`. Compares what the serving API logged since the last check with
        the champion's **reference profile** (its training data's {mon.psi_bins} quantile bins per
        numeric feature, category shares, null shares), stored with the model version.

        1. **read_window**: the inference-log rows since the last decided check (bounds on the run).
        2. **measure_drift**: PSI per feature, share of drifted features, the champion scored on
           delayed labels (`/feedback`) when at least {mon.min_rows} arrived, and the decision:
           `ok`, `warn` (PSI >= {mon.psi_warn:g}), `retrain` (PSI >= {mon.psi_retrain:g}, or the
           primary metric under the gate threshold), `insufficient_data` (< {mon.min_rows} rows),
           `schema_changed` (a column missing, all null, or of another type: an alert, no retrain).
        3. **evidently_report**: Evidently's DataDriftPreset (PSI) as HTML in the MLflow run
           (experiment `{spec.experiment_name}/monitor`; metrics `psi.<feature>` chart drift over time).
        4. **trigger_retrain**: on `retrain`, starts `{spec.retrain_dag_id}` with the reason and the PSI
           table, unless one is already in flight or one was triggered within the cooldown
           (`monitoring.cooldown` {mon.cooldown}), or the cap on drift retrains is reached
           (`monitoring.max_retrains` {cap}). Skipped otherwise, with the reason.
        """
    )


def monitor_dag(spec: ModelSpec, path: Path | None = None) -> DAG:
    with model_dag(
        spec,
        "monitor",
        f"PSI of {spec.name}'s traffic vs its champion's training data; retrain on drift",
        monitor_doc(spec),
        params={
            "ignore_cooldown": Param(
                False,
                type="boolean",
                title="Ignore cooldown",
                description="Trigger a retrain on drift even inside monitoring.cooldown (a retrain in flight still blocks)",
            ),
        },
        schedule=spec.monitoring.schedule,
    ) as dag:

        @task
        def read_window(**context: Any) -> dict[str, Any]:
            from retrainer.steps.monitor import window

            return run_step(window.read_window, spec, run_context(context))

        @task
        def measure_drift(read: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.errors import NoChampion
            from retrainer.steps.monitor import measure

            return run_step(
                measure.measure_drift,
                spec,
                run_context(context),
                read,
                skip_on=(NoChampion,),
            )

        @task(retries=1)
        def evidently_report(measured: dict[str, Any]) -> str | None:
            from retrainer.steps.monitor import report

            return run_step(report.evidently_report, spec, measured)

        @task(retries=2)
        def trigger_retrain(measured: dict[str, Any], **context: Any) -> None:
            """Execute the trigger plan: start the retrain DAG on `retrain`, once, outside the cooldown."""
            from datetime import UTC, datetime

            from retrainer.steps.monitor import checks, report, trigger

            retrain = measured["decision"]["decision"] == trigger.RETRAIN
            now = datetime.now(UTC)
            plan = trigger.plan_trigger(
                spec,
                measured,
                context["run_id"],
                in_flight=context["ti"].get_dr_count(
                    dag_id=spec.retrain_dag_id, states=["queued", "running"]
                )
                if retrain
                else 0,
                last=trigger.last_trigger(spec) if retrain else None,
                now=now,
                ignore_cooldown=bool(context["params"].get("ignore_cooldown")),
                recent=trigger.recent_triggers(spec, now) if retrain else [],
            )
            checks.record_action(
                measured["mlflow_run_id"],
                plan.action,
                plan.detail,
                plan.retrain_run_id,
                model=spec.name,
                record=measured["decision"],
                retrain_dag_id=spec.retrain_dag_id,
            )
            if spec.alerts:
                from retrainer.orchestration.notify import alert
                from retrainer.steps.alerts import monitor_alert

                alert(
                    spec,
                    monitor_alert(spec, measured, plan.action, plan.detail, context["run_id"]),
                )
            if not plan.triggers:
                raise AirflowSkipException(plan.detail)
            report.publish(spec, triggered=True)
            raise trigger_dag_run(spec.retrain_dag_id, plan.retrain_run_id, plan.conf)

        measured = measure_drift(read_window())  # type: ignore[arg-type]
        evidently_report(measured)  # type: ignore[arg-type]
        trigger_retrain(measured)  # type: ignore[arg-type]
    return dag
