"""MLflow tracking: the client, experiments, and the one run per DAG run that a retried task finds again."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from retrainer import constants as C
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    import mlflow
    from mlflow.tracking import MlflowClient

    settings = settings or get_settings()
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def experiment_id(
    client: MlflowClient, name: str, location: str | None, tags: dict[str, str] | None = None
) -> str:
    """The experiment's id, created if missing (fine when another process creates it first).

    Every experiment is marked as model training (`mlflow.experimentKind`), so MLflow's UI opens
    it on runs, charts and models rather than its GenAI view; older experiments get the tag the
    first time they are used."""
    from mlflow.exceptions import MlflowException

    kind = {C.TAG_EXPERIMENT_KIND: C.EXPERIMENT_KIND_TRAINING}
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if (exp.tags or {}).get(C.TAG_EXPERIMENT_KIND) is None:
            client.set_experiment_tag(
                exp.experiment_id, C.TAG_EXPERIMENT_KIND, C.EXPERIMENT_KIND_TRAINING
            )
        return str(exp.experiment_id)
    try:
        return str(
            client.create_experiment(
                name, artifact_location=location, tags={**kind, **(tags or {})}
            )
        )
    except MlflowException:  # created meanwhile
        exp = client.get_experiment_by_name(name)
        assert exp is not None
        return str(exp.experiment_id)


def ensure_experiment(client: MlflowClient, spec: ModelSpec, settings: Settings) -> str:
    return experiment_id(
        client,
        spec.experiment_name,
        settings.artifact_location(spec.name),
        {C.TAG_MODEL: spec.name},
    )


def find_or_create_run(
    client: MlflowClient,
    spec: ModelSpec,
    ctx: RunContext,
    settings: Settings,
    tags: dict[str, str],
    experiment: str | None = None,
) -> str:
    """This DAG run's MLflow run: found again by the DAG run id, so a retried task resumes it."""
    exp_id = experiment or ensure_experiment(client, spec, settings)
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{ctx.run_id}' and tags.`{C.TAG_DAG_ID}` = '{ctx.dag_id}'",
        max_results=1,
    )
    if found:
        return str(found[0].info.run_id)
    run = client.create_run(exp_id, tags=tags, run_name=run_name(ctx))
    return str(run.info.run_id)


def run_name(ctx: RunContext) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{ctx.dag_id}-{ctx.run_id}")[:200]


def run_key(ctx: RunContext) -> str:
    """The DAG run id made safe for paths and object keys."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ctx.run_id)


def run_tags(spec: ModelSpec, ctx: RunContext) -> dict[str, str]:
    return {
        C.TAG_MODEL: spec.name,
        C.TAG_DAG_ID: ctx.dag_id,
        C.TAG_DAG_RUN_ID: ctx.run_id,
        C.TAG_TASK_ID: ctx.task_id,
        C.TAG_TRIGGERED_BY: ctx.triggered_by,
    }


def log_metrics(
    client: MlflowClient, run_id: str, metrics: dict[str, float], ts_ms: int | None = None
) -> None:
    """Every metric in one batch (one round trip), stamped `ts_ms` (default: now); names made
    safe for MLflow."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000) if ts_ms is None else ts_ms
    safe = {re.sub(r"[^A-Za-z0-9_\-. /]", "_", k): float(v) for k, v in metrics.items()}
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in safe.items()])
