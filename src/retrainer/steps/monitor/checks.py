"""Each check is an MLflow run in `retrainer/<model>/monitor`: find, query and tag them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from retrainer import constants as C
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.errors import MonitorError, NoChampion
from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from retrainer.core.drift import ReferenceProfile


def experiment_name(spec: ModelSpec) -> str:
    return f"{spec.experiment_name}/monitor"


def experiment_id(client: MlflowClient, spec: ModelSpec, settings: Settings) -> str:
    from retrainer.stores.tracking import experiment_id as ensure

    location = settings.artifact_location(f"{spec.name}-monitor")
    return ensure(client, experiment_name(spec), location, {C.TAG_MODEL: spec.name})


def find_checks(
    client: MlflowClient, spec: ModelSpec, settings: Settings, filter_string: str, n: int = 1
) -> list[Any]:
    exp = experiment_id(client, spec, settings)
    return list(
        client.search_runs(
            [exp],
            filter_string=filter_string,
            max_results=n,
            order_by=["attributes.start_time DESC"],
        )
    )


def parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def monitor_run(
    client: MlflowClient, spec: ModelSpec, ctx: RunContext, settings: Settings, tags: dict[str, str]
) -> str:
    from retrainer.stores.tracking import find_or_create_run

    exp = experiment_id(client, spec, settings)
    return find_or_create_run(client, spec, ctx, settings, tags, experiment=exp)


def champion_reference(client: MlflowClient, spec: ModelSpec) -> tuple[str, str, ReferenceProfile]:
    """(version, run id, reference profile) of the champion; MonitorError if there is none."""
    from mlflow.exceptions import MlflowException

    from retrainer.core.drift import ReferenceProfile
    from retrainer.stores.registry import version_by_alias

    champion = version_by_alias(client, spec.name, C.ALIAS_CHAMPION)
    if champion is None:
        raise NoChampion(
            f"{spec.name}: no champion yet, so nothing to compare traffic with; run "
            f"{spec.retrain_dag_id} and {spec.deploy_dag_id} first"
        )
    run_id = str(champion.run_id)
    try:
        text = client.download_artifacts(run_id, C.ARTIFACT_REFERENCE_PROFILE)
        with open(text) as fh:
            profile = ReferenceProfile.from_dict(json.load(fh))
    except (MlflowException, OSError) as exc:
        raise MonitorError(
            f"{spec.name}: champion v{champion.version} (run {run_id}) has no reference profile "
            f"({C.ARTIFACT_REFERENCE_PROFILE}): it was trained before monitoring existed. Retrain "
            f"once ({spec.retrain_dag_id}) so the new champion carries one. ({type(exc).__name__})"
        ) from None
    return str(champion.version), run_id, profile


def automation(
    action: str, detail: str, retrain_run: str, settings: Settings, retrain_dag_id: str
) -> dict[str, Any]:
    """The decision record's `automation` block: what was done about the decision, and why."""
    from retrainer.config.links import airflow_run

    block: dict[str, Any] = {
        "action": action,
        "detail": detail,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if retrain_run:
        block |= {
            "retrain_run_id": retrain_run,
            "retrain_run": airflow_run(settings, retrain_dag_id, retrain_run),
        }
    return block


def record_action(
    run_id: str,
    action: str,
    detail: str = "",
    retrain_run: str = "",
    settings: Settings | None = None,
    model: str | None = None,
    record: dict[str, Any] | None = None,
    retrain_dag_id: str = "",
) -> None:
    """What the automation did about a check: on its run, on the model's summary, and (given the
    check's decision `record`) in the decision record itself, logged again with an `automation`
    block so the one document says what was decided, what was done, and why."""
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    if record is not None:
        done = automation(action, detail, retrain_run, settings, retrain_dag_id)
        text = json.dumps(record | {"automation": done}, indent=2)
        client.log_text(run_id, text, C.ARTIFACT_MONITOR_DECISION)
    if model:
        from retrainer.stores import overview

        current = overview.read_summary(client, model, overview.SUMMARY_MONITOR)
        if current and current.get("mlflow_run_id") == run_id:
            current |= {
                "action": action,
                "action_detail": detail[:500],
                "retrain_run_id": retrain_run,
            }
            overview.write_summary(client, model, overview.SUMMARY_MONITOR, current)
    client.set_tag(run_id, C.TAG_MONITOR_ACTION, action)
    if detail:
        client.set_tag(run_id, C.TAG_MONITOR_ACTION_DETAIL, detail[:5000])
    if retrain_run:
        client.set_tag(run_id, C.TAG_MONITOR_RETRAIN_RUN, retrain_run)
    client.set_terminated(run_id, status="FINISHED")


def check_for_run(
    spec: ModelSpec, dag_run_id: str, settings: Settings | None = None
) -> dict[str, Any] | None:
    """The decision a monitor DAG run recorded (None if it recorded none), and its MLflow run."""
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    runs = find_checks(client, spec, settings, f"tags.`{C.TAG_DAG_RUN_ID}` = '{dag_run_id}'")
    if not runs:
        return None
    run = runs[0]
    try:
        path = client.download_artifacts(run.info.run_id, C.ARTIFACT_MONITOR_DECISION)
        with open(path) as fh:
            decision: dict[str, Any] = json.load(fh)
    except Exception:  # measured nothing (no champion, unreadable log): tags say what happened
        decision = {}
    return {
        "decision": decision,
        "action": run.data.tags.get(C.TAG_MONITOR_ACTION, ""),
        "action_detail": run.data.tags.get(C.TAG_MONITOR_ACTION_DETAIL, ""),
        "retrain_run_id": run.data.tags.get(C.TAG_MONITOR_RETRAIN_RUN, ""),
        "mlflow_run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
    }
