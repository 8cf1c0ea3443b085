"""`<model>_deploy`: (approve,) promote, reload serving, smoke test; roll back on failure."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowFailException

from retrainer.orchestration.common import model_dag, run_context, run_step
from retrainer.spec import ModelSpec


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


def deploy_dag(spec: ModelSpec, path: Path | None = None) -> DAG:
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
            if done is not None and spec.alert_destinations("deploy_rolled_back"):
                from retrainer.orchestration.notify import alert
                from retrainer.steps.alerts import rollback_alert

                error = "reload or smoke test failed (see reload_serving / smoke_test)"
                alert(spec, rollback_alert(spec, done, error, context["run_id"]))
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
