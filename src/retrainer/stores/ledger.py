"""The promotion ledger: every promotion and rollback, kept in MLflow so it survives and lists.

Each entry is a run in experiment `retrainer/ledger` whose tags say who or what triggered it,
when, from which version to which, why, with the gate metrics, the data digest and links to the
DAG run and the version's MLflow run. `retrainer history MODEL` reads them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from retrainer.constants import LEDGER_EXPERIMENT

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class LedgerEntry:
    model: str
    action: str  # promote | initial | rollback | pin | auto-rollback
    from_version: str | None
    to_version: str
    triggered_by: str
    reason: str = ""
    dag_id: str = ""
    dag_run_id: str = ""
    dag_run_url: str = ""
    mlflow_run_id: str = ""
    data_digest: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    time: int = 0  # ms since the epoch, from MLflow

    def tags(self) -> dict[str, str]:
        out = {
            f"ledger.{k}": str(v)
            for k, v in asdict(self).items()
            if k not in ("metrics", "time") and v is not None
        }
        out.update({f"ledger.metric.{k}": v for k, v in self.metrics.items()})
        return out


def _experiment_id(client: MlflowClient, artifact_location: str | None) -> str:
    from retrainer.stores.tracking import experiment_id

    return experiment_id(client, LEDGER_EXPERIMENT, artifact_location)


def record(client: MlflowClient, entry: LedgerEntry, artifact_location: str | None = None) -> str:
    exp_id = _experiment_id(client, artifact_location)
    frm = f"v{entry.from_version}" if entry.from_version else "none"
    run = client.create_run(
        exp_id,
        tags=entry.tags(),
        run_name=f"{entry.model} {entry.action} {frm} -> v{entry.to_version}",
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    from retrainer.stores.overview import add_ledger_summary

    add_ledger_summary(
        client,
        entry.model,
        {
            "action": entry.action,
            "from": entry.from_version,
            "to": entry.to_version,
            "by": entry.triggered_by,
            "reason": entry.reason[:200],
            "dag_id": entry.dag_id,
            "dag_run_id": entry.dag_run_id,
            "ledger_run_id": run.info.run_id,
            "time": int(run.info.start_time or 0),
        },
    )
    return str(run.info.run_id)


def history(client: MlflowClient, model: str, limit: int = 100) -> list[LedgerEntry]:
    exp = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`ledger.model` = '{model}'",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    return [_entry(run.data.tags, int(run.info.start_time or 0)) for run in runs]


MOVES = ("promote", "pin", "rollback", "initial")  # the entries that move the champion alias


def moved_in_run(
    client: MlflowClient, model: str, dag_run_id: str, to_version: str
) -> tuple[LedgerEntry, str] | None:
    """This DAG run's entry (and its ledger run id) that made ``to_version`` champion, if it
    wrote one: a retried promotion finds what its first try recorded instead of reading the
    alias it had already moved."""
    exp = client.get_experiment_by_name(LEDGER_EXPERIMENT)
    if exp is None or not dag_run_id:
        return None
    quoted = dag_run_id.replace("'", "")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(
            f"tags.`ledger.model` = '{model}' and tags.`ledger.dag_run_id` = '{quoted}' "
            f"and tags.`ledger.to_version` = '{to_version}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        entry = _entry(run.data.tags, int(run.info.start_time or 0))
        if entry.action in MOVES:
            return entry, str(run.info.run_id)
    return None


def _entry(tags: dict[str, str], time: int) -> LedgerEntry:
    def get(key: str) -> str:
        return tags.get(f"ledger.{key}", "")

    return LedgerEntry(
        model=get("model"),
        action=get("action"),
        from_version=get("from_version") or None,
        to_version=get("to_version"),
        triggered_by=get("triggered_by"),
        reason=get("reason"),
        dag_id=get("dag_id"),
        dag_run_id=get("dag_run_id"),
        dag_run_url=get("dag_run_url"),
        mlflow_run_id=get("mlflow_run_id"),
        data_digest=get("data_digest"),
        metrics={
            k[len("ledger.metric.") :]: v for k, v in tags.items() if k.startswith("ledger.metric.")
        },
        time=time,
    )


def as_row(entry: LedgerEntry) -> dict[str, Any]:
    return asdict(entry)
