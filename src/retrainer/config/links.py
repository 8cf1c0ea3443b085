"""Addresses of the platform's pages (Airflow run, MLflow run, model version) for records and alerts:
as people reach the UIs (`Settings.airflow_ui_url`), never the bind address."""

from __future__ import annotations

from urllib.parse import quote

from retrainer import constants as C
from retrainer.config.settings import Settings


def airflow_run(settings: Settings, dag_id: str, dag_run_id: str) -> str:
    return f"{settings.airflow_ui_url}/dags/{quote(dag_id)}/runs/{quote(dag_run_id, safe='')}"


def mlflow_run(settings: Settings, run_id: str, experiment_id: str | None = None) -> str:
    base = settings.mlflow_ui_url
    page = f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else None
    return (page or f"{base}/#/runs/{run_id}") + C.MLFLOW_UI_TRAINING


def model_version(settings: Settings, model: str, version: str) -> str:
    return f"{settings.mlflow_ui_url}/#/models/{quote(model)}/versions/{quote(str(version))}{C.MLFLOW_UI_TRAINING}"


def decision_links(
    settings: Settings,
    dag_id: str,
    dag_run_id: str,
    mlflow_run_id: str,
    experiment_id: str | None,
    model: str,
    version: str | None,
) -> dict[str, str | None]:
    """The links a decision record carries: its Airflow run, its MLflow run and the model version
    it was about (the champion compared with or monitored; None before there is one)."""
    return {
        "airflow_run": airflow_run(settings, dag_id, dag_run_id),
        "mlflow_run": mlflow_run(settings, mlflow_run_id, experiment_id),
        "model_version": model_version(settings, model, version) if version else None,
    }
