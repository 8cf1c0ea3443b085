"""The Airflow adapter: turns model specs into DAGs. The only module in src/ that imports airflow.

DAG files call `build_dags()`. Task bodies are a few lines that call one function of
`retrainer.steps.retrain`; heavy libraries are imported there, inside the task process, never at parse
time. Data and spec problems fail a task for good (no retries); everything else retries.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from retrainer.config.settings import RunContext, get_settings
from retrainer.errors import RetrainerError, SpecError
from retrainer.spec import ModelSpec, iter_specs

T = TypeVar("T")
START = datetime(2026, 1, 1)
SPEC_ERRORS_DAG_ID = "retrainer_spec_errors"


def run_step(
    step: Callable[..., T],
    *args: Any,
    skip_on: tuple[type[Exception], ...] = (),
    **kwargs: Any,
) -> T:
    """Call a pipeline step; permanent retrainer errors fail the task without retries, and
    `skip_on` errors (nothing to do yet) skip it with their message."""
    try:
        return step(*args, **kwargs)
    except skip_on as exc:
        raise AirflowSkipException(str(exc)) from exc
    except RetrainerError as exc:
        if exc.permanent:
            raise AirflowFailException(str(exc)) from exc
        raise


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
    return {
        "owner": spec.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": True,
    }


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
        tags=["retrainer", kind, spec.name],
        default_args=default_args(spec),
        doc_md=doc_md,
        params=params,
        render_template_as_native_obj=True,
    )


def retrain_doc(spec: ModelSpec, path: Path) -> str:
    thresholds = ", ".join(
        f"{m} {'>= ' + format(b.min, 'g') if b.min is not None else ''}"
        f"{' <= ' + format(b.max, 'g') if b.max is not None else ''}"
        for m, b in spec.gate.thresholds.items()
    )
    return textwrap.dedent(
        f"""\
        ### Retrain `{spec.name}`
        {spec.description}

        Spec: `{path}` &middot; data: `{spec.data.train}` &middot; target: `{spec.data.target}`
        &middot; estimator: `{spec.model.estimator}`

        1. **validate_data**: Great Expectations suite built from the spec's `validation` block.
           A failing batch fails here for good; the report (JSON + HTML) is in the MLflow run.
        2. **train_candidate**: deterministic split, sklearn pipeline, MLflow run in experiment
           `{spec.experiment_name}` (params, data digest, dataset inputs, model in skops format).
        3. **evaluate_candidate**: the candidate and the current `champion` scored on the same
           test split.
        4. **gate**: thresholds ({thresholds or "none"}) and `min_improvement`
           {spec.gate.min_improvement:g} on `{spec.gate.primary_metric}` over the champion.
           A rejection is a normal outcome: the run stays green and registration is skipped.
        5. **register_candidate**: a new version of registered model `{spec.name}` with alias
           `challenger` (the first ever is also `champion`). Re-running never registers twice.

        Trigger with **data_path** to train on another file, folder or `s3://` prefix, and a
        **reason** that is recorded on the MLflow run.
        """
    )


def retrain_dag(spec: ModelSpec, path: Path) -> DAG:
    with model_dag(
        spec,
        "retrain",
        f"Validate, train, gate and register {spec.name}",
        retrain_doc(spec, path),
        params={
            "data_path": Param(
                None,
                type=["null", "string"],
                title="Data path",
                description=f"Train on this file, folder or s3:// prefix instead of {spec.data.train}",
            ),
            "reason": Param(
                "manual", type="string", title="Reason", description="Recorded on the MLflow run"
            ),
            "trigger": Param(
                None,
                type=["null", "object"],
                title="Trigger",
                description="Set by the monitor DAG: the drift decision (PSI table, window); logged to the run",
            ),
        },
    ) as dag:

        @task
        def validate_data(**context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as pipeline

            params = context["params"]
            return run_step(
                pipeline.validate_data,
                spec,
                run_context(context),
                data_uri=params.get("data_path") or None,
                reason=str(params.get("reason") or ""),
                trigger=params.get("trigger") or None,
            )

        @task
        def train_candidate(validated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as pipeline

            return run_step(pipeline.train_candidate, spec, run_context(context), validated)

        @task
        def evaluate_candidate(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as pipeline

            return run_step(pipeline.evaluate_candidate, spec, run_context(context), trained)

        @task
        def gate(evaluated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as pipeline

            return run_step(pipeline.gate_candidate, spec, run_context(context), evaluated)

        @task
        def register_candidate(gated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as pipeline

            registered = run_step(pipeline.register_candidate, spec, run_context(context), gated)
            if registered is None:
                reasons = "; ".join(gated["gate"]["reasons"])
                raise AirflowSkipException(
                    f"gate rejected the candidate, nothing registered: {reasons}"
                )
            return registered

        # TaskFlow passes XComArgs where the functions declare their runtime types.
        registered = register_candidate(gate(evaluate_candidate(train_candidate(validate_data()))))  # type: ignore[arg-type]

        @task(retries=2)
        def trigger_deploy(registered: dict[str, Any], **context: Any) -> None:
            """Start the deploy DAG for the new version (once per retrain run, even if re-run)."""
            from airflow.sdk.exceptions import DagRunTriggerException

            run_id = context["run_id"]
            raise DagRunTriggerException(
                trigger_dag_id=spec.deploy_dag_id,
                dag_run_id=f"deploy__{run_id}",
                conf={
                    "version": registered["version"],
                    "reason": f"retrain {run_id} passed the gate",
                    "origin": "retrain",
                },
                reset_dag_run=False,
                skip_when_already_exists=True,
                wait_for_completion=False,
                allowed_states=["success"],
                failed_states=["failed"],
                poke_interval=10,
                deferrable=False,
            )

        trigger_deploy(registered)  # type: ignore[arg-type]
    return dag


def deploy_doc(spec: ModelSpec) -> str:
    approval = (
        "**approve**: a person approves or rejects in the Airflow UI (Required Actions); a "
        "rejection ends the run and leaves the champion as it was.\n"
        if spec.deployment.approval == "manual"
        else ""
    )
    return textwrap.dedent(
        f"""\
        ### Deploy `{spec.name}`
        Triggered by `{spec.retrain_dag_id}` after a candidate is registered, or by hand.

        {approval}
        1. **promote_champion**: alias `champion` moves to the version (default: `challenger`);
           the old champion becomes `previous`. Written to the promotion ledger
           (`retrainer history {spec.name}`).
        2. **reload_serving**: the serving API loads it; if loading fails it keeps the old one.
        3. **smoke_test**: the live endpoint serves the new version and answers held-back rows
           exactly as the registered model does.
        4. **rollback** (only on failure): `champion` goes back to the replaced version, serving
           reloads it, the ledger records it, and the run fails loudly.

        Trigger with **version** to roll back or pin a version (`retrainer rollback {spec.name}`).
        """
    )


def deploy_dag(spec: ModelSpec) -> DAG:
    with model_dag(
        spec,
        "deploy",
        f"Promote, reload serving, smoke test and (on failure) roll back {spec.name}",
        deploy_doc(spec),
        params={
            "version": Param(
                None,
                type=["null", "string", "integer"],
                title="Version",
                description="Deploy this registered version (a rollback or a pin); empty: the challenger",
            ),
            "reason": Param(
                "manual", type="string", title="Reason", description="Recorded in the ledger"
            ),
            "origin": Param(
                "manual",
                enum=["manual", "retrain"],
                title="Origin",
                description="retrain: a candidate that just passed the gate (set by the retrain DAG)",
            ),
        },
    ) as dag:

        @task
        def promote_champion(**context: Any) -> dict[str, Any]:
            from retrainer.steps import deploy

            params = context["params"]
            version = params.get("version")
            return run_step(
                deploy.promote,
                spec,
                run_context(context),
                version=str(version) if version not in (None, "") else None,
                reason=str(params.get("reason") or ""),
                origin=str(params.get("origin") or "manual"),
            )

        @task(retries=1)
        def reload_serving(promoted: dict[str, Any]) -> dict[str, Any]:
            from retrainer.steps import deploy

            return run_step(deploy.reload_serving, spec, promoted["version"])

        @task(retries=0)
        def smoke_test(promoted: dict[str, Any], reloaded: dict[str, Any]) -> dict[str, Any]:
            from retrainer.steps import deploy

            return run_step(deploy.smoke_test, spec, promoted["version"])

        @task(trigger_rule="one_failed", retries=0)
        def rollback(**context: Any) -> None:
            from retrainer.steps import deploy

            ti = context["ti"]
            promoted = ti.xcom_pull(task_ids="promote_champion")
            done = run_step(
                deploy.rollback, spec, run_context(context), promoted, "reload or smoke test failed"
            )
            if done is None:
                raise AirflowFailException(
                    f"{spec.name}: deployment failed before anything changed; champion untouched"
                )
            raise AirflowFailException(
                f"{spec.name}: deployment of v{done['from']} failed (see reload_serving / smoke_test); "
                f"rolled back to v{done['to']}, which serving answers with"
            )

        promoted = promote_champion()
        if spec.deployment.approval == "manual":
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Deploy {spec.name}?",
                body=f"Approve to make the challenger of `{spec.name}` the champion behind the serving API. "
                f"See the gate decision in MLflow (experiment `{spec.experiment_name}`).",
                retries=0,
            )
            approve >> promoted
        reloaded = reload_serving(promoted)  # type: ignore[arg-type]
        checked = smoke_test(promoted, reloaded)  # type: ignore[arg-type]
        [reloaded, checked] >> rollback()
    return dag


def monitor_doc(spec: ModelSpec) -> str:
    mon = spec.monitoring
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
           (`monitoring.cooldown` {mon.cooldown}). Skipped otherwise, with the reason.
        """
    )


def monitor_dag(spec: ModelSpec) -> DAG:
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
            from retrainer.steps import monitor as monitoring

            return run_step(monitoring.read_window, spec, run_context(context))

        @task
        def measure_drift(read: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import monitor as monitoring

            return run_step(
                monitoring.measure_drift,
                spec,
                run_context(context),
                read,
                skip_on=(monitoring.NoChampion,),
            )

        @task(retries=1)
        def evidently_report(measured: dict[str, Any]) -> str | None:
            from retrainer.steps import monitor as monitoring

            return run_step(monitoring.evidently_report, spec, measured)

        @task(retries=2)
        def trigger_retrain(measured: dict[str, Any], **context: Any) -> None:
            """Start the retrain DAG on a `retrain` decision, once, outside the cooldown."""
            from airflow.sdk.exceptions import DagRunTriggerException

            from retrainer.steps import monitor as monitoring

            decision = measured["decision"]
            run_id = measured["mlflow_run_id"]
            if decision["decision"] != monitoring.RETRAIN:
                monitoring.record_action(run_id, "none", decision["decision"])
                raise AirflowSkipException(f"decision {decision['decision']}: nothing to trigger")
            in_flight = context["ti"].get_dr_count(
                dag_id=spec.retrain_dag_id, states=["queued", "running"]
            )
            if in_flight:
                detail = f"{spec.retrain_dag_id} already has {in_flight} run(s) in flight"
                monitoring.record_action(run_id, "in_flight", detail)
                raise AirflowSkipException(detail)
            ok, why = monitoring.retrain_allowed(
                spec, ignore_cooldown=bool(context["params"].get("ignore_cooldown"))
            )
            if not ok:
                monitoring.record_action(run_id, "cooldown", why)
                raise AirflowSkipException(why)
            retrain_run = f"drift__{context['run_id']}"
            monitoring.record_action(run_id, "triggered", why, retrain_run)
            monitoring.publish(spec, triggered=True)
            raise DagRunTriggerException(
                trigger_dag_id=spec.retrain_dag_id,
                dag_run_id=retrain_run,
                conf={
                    "reason": monitoring.retrain_reason(decision)[:4000],
                    "trigger": {
                        "origin": "monitor",
                        "monitor_run_id": context["run_id"],
                        "mlflow_run_id": run_id,
                        "decision": decision["decision"],
                        "features": decision["features"],
                        "psi": decision["psi"],
                        "window": decision["window"],
                    },
                },
                reset_dag_run=False,
                skip_when_already_exists=True,
                wait_for_completion=False,
                allowed_states=["success"],
                failed_states=["failed"],
                poke_interval=10,
                deferrable=False,
            )

        measured = measure_drift(read_window())  # type: ignore[arg-type]
        evidently_report(measured)  # type: ignore[arg-type]
        trigger_retrain(measured)  # type: ignore[arg-type]
    return dag


def spec_errors_dag(errors: list[tuple[Path, Exception]]) -> DAG:
    """Broken specs made visible in the Airflow UI, without hiding the other models' DAGs."""
    listing = "\n\n".join(f"**{path.name}**\n```\n{err}\n```" for path, err in errors)
    names = ", ".join(p.name for p, _ in errors)
    with DAG(
        dag_id=SPEC_ERRORS_DAG_ID,
        description=f"{len(errors)} broken model spec(s): {names}. Fix them; other models are unaffected.",
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["retrainer", "broken-spec"],
        doc_md=f"### Broken model specs\nThese files were skipped; their DAGs do not exist until fixed. "
        f"Run `retrainer specs check` to see the same.\n\n{listing}",
    ) as dag:

        @task
        def report_spec_errors() -> None:
            raise AirflowFailException("\n\n".join(f"{p}: {e}" for p, e in errors))

        report_spec_errors()
    return dag


BUILDERS = {"retrain": "retrain_dag", "deploy": "deploy_dag", "monitor": "monitor_dag"}


def build_dags(kind: str = "retrain", models_dir: str | Path | None = None) -> dict[str, DAG]:
    """Every valid spec's DAG of one kind (one DAG file per kind keeps each file's parse short).

    The retrain file also carries the DAG that shows broken specs, so it exists exactly once.
    """
    if kind not in BUILDERS:
        raise ValueError(f"kind: expected one of {sorted(BUILDERS)}; found {kind!r}")
    root = Path(models_dir) if models_dir else get_settings().models_dir
    dags: dict[str, DAG] = {}
    errors: list[tuple[Path, Exception]] = []
    for path, spec in iter_specs(root):
        if isinstance(spec, SpecError):
            errors.append((path, spec))
            continue
        try:
            if kind == "retrain":
                dag = retrain_dag(spec, path)
            elif kind == "deploy":
                dag = deploy_dag(spec)
            else:
                dag = monitor_dag(spec)
        except Exception as exc:  # one bad spec never hides the others
            errors.append((path, exc))
            continue
        dags[dag.dag_id] = dag
    if errors and kind == "retrain":
        dags[SPEC_ERRORS_DAG_ID] = spec_errors_dag(errors)
    return dags
