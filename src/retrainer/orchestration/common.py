"""What every per-model DAG shares: ids, tags, retries, one active run, and how a task calls a step.

Task bodies are a few lines that call one function of `retrainer.steps`; heavy libraries are
imported there, inside the task process, never at parse time. Data and spec problems fail a task
for good (no retries); everything else retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from retrainer.config.environment import quiet_skops_lookups
from retrainer.config.settings import RunContext
from retrainer.errors import RetrainerError
from retrainer.spec import ModelSpec

T = TypeVar("T")
log = logging.getLogger(__name__)
START = datetime(2026, 1, 1)


def run_step(
    step: Callable[..., T],
    *args: Any,
    skip_on: tuple[type[Exception], ...] = (),
    **kwargs: Any,
) -> T:
    """Call a pipeline step; permanent retrainer errors fail the task without retries, and
    `skip_on` errors (nothing to do yet) skip it with their message. Logs what the task cost,
    and records it as metrics (`cost.<task>.*`) on the MLflow run the step worked for."""
    started, cpu = time.time(), time.process_time()
    quiet_skops_lookups()
    result: Any = None
    try:
        result = step(*args, **kwargs)
        return result
    except skip_on as exc:
        raise AirflowSkipException(str(exc)) from exc
    except RetrainerError as exc:
        if exc.permanent:
            raise AirflowFailException(str(exc)) from exc
        raise
    finally:
        _record_cost(step, args, result, started, cpu)


def _record_cost(
    step: Callable[..., Any], args: tuple[Any, ...], result: Any, started: float, cpu: float
) -> None:
    from retrainer.steps import cost

    ctx = next((a for a in args if isinstance(a, RunContext)), None)
    task = ctx.task_id if ctx is not None and ctx.task_id else step.__name__
    spent = cost.measure(task, started, cpu)
    log.info("%s", spent.summary())
    run_id = cost.run_id_of(result, args)
    if run_id is None:
        return
    try:
        cost.record(run_id, spent)
    except Exception as exc:  # the cost is a record of the task, never a reason to fail it
        log.warning("could not record the task's cost on MLflow run %s: %s", run_id, exc)


def run_context(context: Any) -> RunContext:
    ti = context["ti"]
    dag_run = context["dag_run"]
    triggered_by = getattr(dag_run, "triggered_by", None) or getattr(dag_run, "run_type", "")
    return RunContext(
        dag_id=ti.dag_id,
        run_id=context["run_id"],
        task_id=ti.task_id,
        try_number=int(getattr(ti, "try_number", 1) or 1),
        triggered_by=str(getattr(triggered_by, "value", triggered_by)),
    )


def default_args(spec: ModelSpec) -> dict[str, Any]:
    args: dict[str, Any] = {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": True,
    }
    if spec.alert_destinations("task_failed"):  # after the last retry, not on each one
        from retrainer.orchestration.notify import on_task_failed

        args["on_failure_callback"] = on_task_failed(spec)
    return args


def model_dag(
    spec: ModelSpec,
    kind: str,
    description: str,
    doc_md: str,
    params: dict[str, Param],
    schedule: str | None = None,
) -> DAG:
    """What every per-model DAG shares: ids, tags, one active run, retries, no catch-up."""
    return DAG(
        dag_id=f"{spec.name}_{kind}",
        description=description,
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["retrainer", kind, spec.name, *([f"team:{spec.team}"] if spec.team else [])],
        default_args=default_args(spec),
        doc_md=doc_md,
        params=params,
        render_template_as_native_obj=True,
        access_control=spec.access_control.dag_access_control() if spec.access_control else None,
    )


def trigger_dag_run(dag_id: str, run_id: str, conf: dict[str, Any]) -> Exception:
    """The exception that makes a task start another DAG's run, once: a re-run of the task
    finds the run id taken and does nothing (raise what this returns)."""
    from airflow.sdk.exceptions import DagRunTriggerException

    return DagRunTriggerException(
        trigger_dag_id=dag_id,
        dag_run_id=run_id,
        conf=conf,
        reset_dag_run=False,
        skip_when_already_exists=True,
        wait_for_completion=False,
        allowed_states=["success"],
        failed_states=["failed"],
        poke_interval=10,
        deferrable=False,
    )
