"""Extra links on retrainer's tasks: the MLflow run, the model version, the validation and drift
reports, built from what the task returned (its XCom) and the MLflow UI's address.

Nothing here calls MLflow: rendering a task page costs one small query of Airflow's own XCom
table. A task that returned nothing (it failed before returning) borrows the run reference of
its DAG run's first task, which recorded it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from retrainer import constants as C

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

KINDS = ("retrain", "deploy", "monitor")
# The task of each DAG kind whose return value names the DAG run's MLflow run.
ANCHOR = {"retrain": "validate_data", "monitor": "measure_drift", "deploy": "promote_champion"}


def dag_kind(dag_id: str) -> str | None:
    for kind in KINDS:
        if dag_id.endswith(f"_{kind}"):
            return kind
    return None


def mlflow_ui() -> str:
    from retrainer.config.settings import get_settings

    return get_settings().mlflow_ui_url


def run_url(run_id: str, experiment_id: str | None, artifact: str = "") -> str:
    """The MLflow UI's page of a run (or of one of its artifacts)."""
    base = mlflow_ui()
    if not experiment_id:
        return f"{base}/#/runs/{quote(run_id)}{C.MLFLOW_UI_TRAINING}"
    url = f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}"
    return (f"{url}/artifactPath/{artifact}" if artifact else url) + C.MLFLOW_UI_TRAINING


def version_url(model: str, version: str) -> str:
    return f"{mlflow_ui()}/#/models/{quote(model)}/versions/{quote(str(version))}{C.MLFLOW_UI_TRAINING}"


def _decode(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def returned(ti_key: TaskInstanceKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """(this task's return value, the DAG run's anchor task's return value), as dicts."""
    kind = dag_kind(ti_key.dag_id)
    if kind is None:
        return {}, {}
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    anchor = ANCHOR[kind]
    with create_session() as session:
        rows = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=list({ti_key.task_id, anchor}),
            ).with_only_columns(XComModel.task_id, XComModel.value)
        ).all()
    values = {task_id: _decode(value) for task_id, value in rows}
    own = values.get(ti_key.task_id)
    first = values.get(anchor)
    return (own if isinstance(own, dict) else {}), (first if isinstance(first, dict) else {})


class _RetrainerLink(BaseOperatorLink):
    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        try:
            own, anchor = returned(ti_key)
        except Exception:  # a link must never break the task page
            return ""
        return self.build(ti_key, own, anchor) or ""

    def build(self, ti_key: TaskInstanceKey, own: dict[str, Any], anchor: dict[str, Any]) -> str:
        raise NotImplementedError


class MLflowRunLink(_RetrainerLink):
    name = "MLflow run"

    def build(self, ti_key: TaskInstanceKey, own: dict[str, Any], anchor: dict[str, Any]) -> str:
        ref = own if own.get("mlflow_run_id") else anchor
        if ti_key.dag_id.endswith("_deploy") and ref.get("ledger_run_id"):
            return run_url(str(ref["ledger_run_id"]), None)
        if not ref.get("mlflow_run_id"):
            return ""
        return run_url(str(ref["mlflow_run_id"]), ref.get("experiment_id"))


class ModelVersionLink(_RetrainerLink):
    name = "Model version"

    def build(self, ti_key: TaskInstanceKey, own: dict[str, Any], anchor: dict[str, Any]) -> str:
        for ref in (own, anchor):
            model = ref.get("name") or ref.get("model")
            if model and ref.get("version"):
                return version_url(str(model), str(ref["version"]))
        return ""


class ValidationReportLink(_RetrainerLink):
    name = "Validation report"

    def build(self, ti_key: TaskInstanceKey, own: dict[str, Any], anchor: dict[str, Any]) -> str:
        if dag_kind(ti_key.dag_id) != "retrain" or not anchor.get("mlflow_run_id"):
            return ""
        return run_url(
            str(anchor["mlflow_run_id"]), anchor.get("experiment_id"), C.ARTIFACT_VALIDATION_HTML
        )


class DriftReportLink(_RetrainerLink):
    name = "Drift report"

    def build(self, ti_key: TaskInstanceKey, own: dict[str, Any], anchor: dict[str, Any]) -> str:
        if dag_kind(ti_key.dag_id) != "monitor" or not anchor.get("mlflow_run_id"):
            return ""
        return run_url(
            str(anchor["mlflow_run_id"]), anchor.get("experiment_id"), C.ARTIFACT_MONITOR_REPORT
        )


LINKS = [MLflowRunLink(), ModelVersionLink(), ValidationReportLink(), DriftReportLink()]
