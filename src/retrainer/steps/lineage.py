"""Which datasets each task reads and writes, for OpenLineage: data → validation → training →
version → deployment → monitoring.

A plain function of the task's id and the small JSON results (XCom) of the task and its
upstream tasks; `orchestration.lineage` turns the names into OpenLineage datasets for Airflow's
OpenLineage provider. Names follow OpenLineage's naming: a namespace (`file`, `s3://bucket`,
the MLflow tracking URI, the serving URL) and a name inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from retrainer import constants as C
from retrainer.config.resources import redact_url
from retrainer.config.settings import Settings


@dataclass(frozen=True)
class DatasetRef:
    namespace: str
    name: str


@dataclass(frozen=True)
class TaskLineage:
    inputs: list[DatasetRef] = field(default_factory=list)
    outputs: list[DatasetRef] = field(default_factory=list)


def location(uri: str) -> DatasetRef:
    """A file or object as a dataset: `s3://bucket` + key, or `file` + absolute path."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        return DatasetRef(f"s3://{bucket}", key)
    if uri.startswith("file://"):
        return DatasetRef("file", uri[len("file://") :])
    return DatasetRef("file", uri)


def run_artifact(settings: Settings, run_id: str, path: str) -> DatasetRef:
    return DatasetRef(redact_url(settings.tracking_uri), f"runs/{run_id}/artifacts/{path}")


def model_version(settings: Settings, model: str, version: str) -> DatasetRef:
    return DatasetRef(redact_url(settings.tracking_uri), f"models/{model}/versions/{version}")


def deployment(settings: Settings, model: str) -> DatasetRef:
    return DatasetRef(settings.serving_url, f"models/{model}@{C.ALIAS_CHAMPION}")


def inference_log(settings: Settings, model: str) -> DatasetRef:
    root = settings.inference_log_root.rstrip("/")
    return location(f"{root}/{model}")


def task_lineage(
    settings: Settings,
    model: str,
    task_id: str,
    result: Any,
    upstream: dict[str, Any],
) -> TaskLineage:
    """The datasets `task_id` read and wrote, from its result and its upstream results."""
    out = result if isinstance(result, dict) else {}
    run = str(out.get("mlflow_run_id") or "")
    if task_id == "validate_data" and out:
        return TaskLineage(
            [location(out["source"])],
            [
                run_artifact(settings, run, C.ARTIFACT_VALIDATION_JSON),
                location(out["snapshot_uri"]),
            ],
        )
    if task_id == "train_candidate" and out:
        snapshot = out["test_uri"].rsplit("/", 1)[0] + "/data.parquet"
        return TaskLineage(
            [location(snapshot), run_artifact(settings, run, C.ARTIFACT_VALIDATION_JSON)],
            [run_artifact(settings, run, C.MODEL_ARTIFACT_NAME), location(out["test_uri"])],
        )
    if task_id == "evaluate_candidate" and out:
        inputs = [run_artifact(settings, run, C.MODEL_ARTIFACT_NAME), location(out["test_uri"])]
        if out.get("champion_version"):
            inputs.append(model_version(settings, model, str(out["champion_version"])))
        return TaskLineage(inputs, [])
    if task_id == "gate" and out:
        return TaskLineage(
            [run_artifact(settings, run, C.MODEL_ARTIFACT_NAME)],
            [run_artifact(settings, run, C.ARTIFACT_GATE_JSON)],
        )
    if task_id == "register_candidate" and out:
        gated = upstream.get("gate") or {}
        gate_run = str(gated.get("mlflow_run_id") or "")
        return TaskLineage(
            [
                run_artifact(settings, gate_run, C.MODEL_ARTIFACT_NAME),
                run_artifact(settings, gate_run, C.ARTIFACT_GATE_JSON),
            ],
            [model_version(settings, model, str(out["version"]))],
        )
    if task_id == "promote_champion" and out:
        return TaskLineage(
            [model_version(settings, model, str(out["version"]))], [deployment(settings, model)]
        )
    if task_id in ("reload_serving", "smoke_test") and out:
        return TaskLineage([deployment(settings, model)], [])
    if task_id == "read_window" and out:
        return TaskLineage(
            [inference_log(settings, model)],
            [],
        )
    if task_id == "measure_drift" and out:
        return TaskLineage(
            [inference_log(settings, model), deployment(settings, model)],
            [run_artifact(settings, run, C.ARTIFACT_MONITOR_DECISION)],
        )
    if task_id == "evidently_report" and out is not None:
        measured = upstream.get("measure_drift") or {}
        check = str(measured.get("mlflow_run_id") or "")
        return TaskLineage(
            [run_artifact(settings, check, C.ARTIFACT_MONITOR_DECISION)],
            [run_artifact(settings, check, C.ARTIFACT_MONITOR_REPORT)],
        )
    return TaskLineage()


UPSTREAM = {"register_candidate": ["gate"], "evidently_report": ["measure_drift"]}
