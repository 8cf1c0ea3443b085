"""`<model>_retrain`: validate, train, evaluate, gate, register, then trigger the deploy."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task
from airflow.sdk.exceptions import AirflowSkipException

from retrainer.orchestration.common import model_dag, run_context, run_step, trigger_dag_run
from retrainer.spec import ModelSpec


def retrain_doc(spec: ModelSpec, path: Path) -> str:
    thresholds = ", ".join(
        f"{m} {'>= ' + format(b.min, 'g') if b.min is not None else ''}"
        f"{' <= ' + format(b.max, 'g') if b.max is not None else ''}"
        for m, b in spec.gate.thresholds.items()
    )
    # The description goes in after dedent: a second line of it at column 0 would leave the
    # template indented, and the whole doc would render as a code block
    doc = textwrap.dedent(
        f"""\
        ### Retrain `{spec.name}`
        DESCRIPTION

        Spec: `{path}` &middot; data: `{spec.data.train}` &middot; target: `{spec.data.target}`
        &middot; estimator: `{spec.model.estimator}`

        1. **validate_data**: Great Expectations suite built from the spec's `validation` block.
           A failing batch fails here for good; the report (JSON + HTML) is in the MLflow run.
        2. **train_candidate**: deterministic split, sklearn pipeline, MLflow run in experiment
           `{spec.experiment_name}` (params, data digest, dataset inputs, model in skops format).
        3. **evaluate_candidate**: the candidate and the current `champion` scored on the same
           test split.
        4. **gate**: thresholds ({thresholds or "none"}), then `{spec.gate.primary_metric}`
           against the champion on the same rows: {spec.gate.rule.replace("_", "-")}, margin
           {spec.gate.effective_margin:g}, confidence {spec.gate.confidence:g} (paired test and
           bootstrap interval{", slices: " + ", ".join(s.column for s in spec.gate.slices) if spec.gate.slices else ""}).
           A rejection is a normal outcome: the run stays green and registration is skipped.
        5. **register_candidate**: a new version of registered model `{spec.name}` with alias
           `challenger` (the first ever is also `champion`). Re-running never registers twice.

        Trigger with **data_path** to train on another file, folder or `s3://` prefix, and a
        **reason** that is recorded on the MLflow run.
        """
    )
    return doc.replace("DESCRIPTION", spec.description.strip(), 1)


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
            from retrainer.steps import retrain as steps

            params = context["params"]
            return run_step(
                steps.validate_data,
                spec,
                run_context(context),
                data_uri=params.get("data_path") or None,
                reason=str(params.get("reason") or ""),
                trigger=params.get("trigger") or None,
            )

        @task
        def train_candidate(validated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as steps

            return run_step(steps.train_candidate, spec, run_context(context), validated)

        @task
        def evaluate_candidate(trained: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as steps

            return run_step(steps.evaluate_candidate, spec, run_context(context), trained)

        @task
        def gate(evaluated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as steps

            gated = run_step(steps.gate_candidate, spec, run_context(context), evaluated)
            if spec.alert_destinations("gate_rejected"):
                from retrainer.orchestration.notify import alert
                from retrainer.steps.alerts import gate_alert

                alert(spec, gate_alert(spec, gated, context["run_id"]))
            return gated

        @task
        def register_candidate(gated: dict[str, Any], **context: Any) -> dict[str, Any]:
            from retrainer.steps import retrain as steps

            registered = run_step(steps.register_candidate, spec, run_context(context), gated)
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
            run_id = context["run_id"]
            raise trigger_dag_run(
                spec.deploy_dag_id,
                f"deploy__{run_id}",
                {
                    "version": registered["version"],
                    "reason": f"retrain {run_id} passed the gate",
                    "origin": "retrain",
                },
            )

        trigger_deploy(registered)  # type: ignore[arg-type]
    return dag
