"""What happened in a retrain run, read back from MLflow (the record), for the CLI and demo."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from retrainer import constants as C
from retrainer.config.settings import Settings


@dataclass
class RetrainOutcome:
    model: str
    dag_run_id: str
    mlflow_run_id: str | None = None
    experiment_id: str | None = None
    validation: str | None = None
    gate: dict[str, Any] | None = None
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    error: str | None = None

    def lines(self) -> list[str]:
        if self.mlflow_run_id is None:
            return [f"  no MLflow run found for DAG run {self.dag_run_id}"]
        out = [f"  validation   {self.validation or 'not run'}"]
        if self.error:
            out.append(f"  error        {self.error.splitlines()[0]}")
        if self.gate:
            out.append(f"  gate         {self.gate['decision'].upper()}")
            out += [f"               - {r}" for r in self.gate["reasons"]]
            from retrainer.core.gate import GateDecision

            out += [
                "    " + line for line in GateDecision.from_dict(self.gate).table().splitlines()
            ]
            metrics = self.gate["candidate_metrics"]
            out.append(
                "  test split   " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
            )
        if self.version:
            out.append(
                f"  registered   {self.model} version {self.version} (aliases: {', '.join(self.aliases)})"
            )
        elif self.gate:
            out.append(
                "  registered   nothing (gate rejected the candidate; the champion is unchanged)"
            )
        return out


def retrain_outcome(model: str, dag_id: str, dag_run_id: str, settings: Settings) -> RetrainOutcome:
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(settings)
    outcome = RetrainOutcome(model, dag_run_id)
    exp = client.get_experiment_by_name(f"retrainer/{model}")
    if exp is None:
        return outcome
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{dag_run_id}' and tags.`{C.TAG_DAG_ID}` = '{dag_id}'",
        max_results=1,
    )
    if not runs:
        return outcome
    run = runs[0]
    outcome.mlflow_run_id = run.info.run_id
    outcome.experiment_id = exp.experiment_id
    outcome.validation = run.data.tags.get(C.TAG_VALIDATION)
    if run.data.tags.get(C.TAG_GATE_DECISION):
        try:
            path = client.download_artifacts(run.info.run_id, C.ARTIFACT_GATE_JSON)
            with open(path) as fh:
                outcome.gate = json.load(fh)
        except Exception as exc:  # the tag still tells the decision
            outcome.error = f"gate decision artifact unreadable: {exc}"
    version = run.data.tags.get("retrainer.model_version")
    if version:
        mv = client.get_model_version(model, version)
        outcome.version = version
        outcome.aliases = list(mv.aliases or [])
    return outcome


def model_versions(model: str, settings: Settings) -> list[dict[str, Any]]:
    from mlflow.exceptions import MlflowException

    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(settings)
    try:
        versions = client.search_model_versions(f"name = '{model}'")
    except MlflowException:
        return []
    rows = []
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags or {}
        primary = {k[len("metric.") :]: v for k, v in tags.items() if k.startswith("metric.")}
        rows.append(
            {
                "version": str(mv.version),
                "aliases": list(mv.aliases or []),
                "gate": tags.get(C.TAG_GATE_DECISION, ""),
                "metric": ", ".join(f"{k}={v}" for k, v in sorted(primary.items())[:3]),
                "dag_run_id": tags.get(C.TAG_DAG_RUN_ID),
            }
        )
    return rows
