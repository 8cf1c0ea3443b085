"""What a task cost, recorded as MLflow metrics on the run it worked for.

Every task of the retrain and monitor DAGs logs `cost.<task>.wall_s` (time in the step),
`cost.<task>.cpu_s` (CPU seconds of the task process in the step), `cost.<task>.peak_mb` (the
process's peak resident memory) and `cost.<task>.startup_s` (process start, task runner and DAG
parse before the step). The retrain's validate step adds the data size (`data.rows`,
`data.bytes`). `training_cost` sums a run's costs back for the CLI and the model card.
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from retrainer.config.settings import Settings, get_settings
from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
PREFIX = "cost."
FIELDS = ("wall_s", "cpu_s", "peak_mb", "startup_s")


@dataclass(frozen=True)
class TaskCost:
    task: str
    wall_s: float
    cpu_s: float
    peak_mb: float
    startup_s: float

    def metrics(self) -> dict[str, float]:
        return {f"{PREFIX}{self.task}.{f}": round(float(getattr(self, f)), 4) for f in FIELDS}

    def summary(self) -> str:
        return (
            f"task cost: {self.startup_s:.2f} s before the step (process start, task runner, DAG "
            f"parse), {self.wall_s:.2f} s in the step ({self.cpu_s:.2f} s CPU), peak memory "
            f"{self.peak_mb:.0f} MB"
        )


def measure(task: str, started: float, cpu: float) -> TaskCost:
    """The cost of the step that began at wall time `started` with process CPU time `cpu`."""
    import psutil

    now = time.time()
    return TaskCost(
        task=task,
        wall_s=now - started,
        cpu_s=time.process_time() - cpu,
        peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        startup_s=max(0.0, started - psutil.Process().create_time()),
    )


def record(run_id: str, cost: TaskCost, settings: Settings | None = None) -> None:
    from retrainer.stores.tracking import log_metrics, mlflow_client

    log_metrics(mlflow_client(settings or get_settings()), run_id, cost.metrics())


def run_id_of(result: Any, args: tuple[Any, ...]) -> str | None:
    """The MLflow run a step worked for: in its result, or in the result it was given."""
    for candidate in (result, *reversed(args)):
        if isinstance(candidate, dict) and isinstance(candidate.get("mlflow_run_id"), str):
            return str(candidate["mlflow_run_id"])
    return None


@dataclass(frozen=True)
class CostSummary:
    """A run's cost summed over its tasks, per task, with its data size."""

    wall_s: float
    cpu_s: float
    peak_mb: float
    tasks: dict[str, dict[str, float]]
    rows: int | None = None
    data_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            "peak_mb": round(self.peak_mb, 1),
            "rows": self.rows,
            "data_bytes": self.data_bytes,
            "tasks": self.tasks,
        }

    def short(self) -> str:
        return f"{self.wall_s:.1f} s wall, {self.cpu_s:.1f} s CPU, peak {self.peak_mb:.0f} MB"


def summarise(metrics: dict[str, float]) -> CostSummary | None:
    """A run's metrics as a cost summary; None when the run recorded no cost."""
    tasks: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not key.startswith(PREFIX):
            continue
        task, _, field = key[len(PREFIX) :].rpartition(".")
        if field in FIELDS and task:
            tasks.setdefault(task, {})[field] = float(value)
    if not tasks:
        return None
    rows = metrics.get("data.rows")
    size = metrics.get("data.bytes")
    return CostSummary(
        wall_s=sum(t.get("wall_s", 0.0) for t in tasks.values()),
        cpu_s=sum(t.get("cpu_s", 0.0) for t in tasks.values()),
        peak_mb=max(t.get("peak_mb", 0.0) for t in tasks.values()),
        tasks=dict(sorted(tasks.items())),
        rows=None if rows is None else int(rows),
        data_bytes=None if size is None else int(size),
    )


def run_cost(client: MlflowClient, run_id: str) -> CostSummary | None:
    return summarise(dict(client.get_run(run_id).data.metrics))


@dataclass(frozen=True)
class RecentRetrains:
    """The retrain runs of a period: how many, how many registered a version, what they cost."""

    days: int
    runs: int
    registered: int
    drift_triggered: int
    wall_s: float
    cpu_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "runs": self.runs,
            "registered": self.registered,
            "drift_triggered": self.drift_triggered,
            "wall_s": round(self.wall_s, 1),
            "cpu_s": round(self.cpu_s, 1),
        }

    def short(self) -> str:
        return (
            f"{self.runs} retrains in {self.days} d ({self.registered} registered, "
            f"{self.drift_triggered} drift-triggered): {self.wall_s:.0f} s wall, "
            f"{self.cpu_s:.0f} s CPU"
        )


def recent_retrains(
    spec: ModelSpec, days: int = 30, settings: Settings | None = None, now: datetime | None = None
) -> RecentRetrains:
    """The retrain runs of the last `days` days, from the model's experiment."""
    from retrainer import constants as C
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    exp = client.get_experiment_by_name(spec.experiment_name)
    if exp is None:
        return RecentRetrains(days, 0, 0, 0, 0.0, 0.0)
    since = (now or datetime.now(UTC)) - timedelta(days=days)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"attributes.start_time > {int(since.timestamp() * 1000)}",
        max_results=5000,
    )
    wall = cpu = 0.0
    for run in runs:
        summary = summarise(dict(run.data.metrics))
        if summary is not None:
            wall += summary.wall_s
            cpu += summary.cpu_s
    return RecentRetrains(
        days=days,
        runs=len(runs),
        registered=sum(1 for r in runs if r.data.tags.get(C.TAG_MODEL_VERSION)),
        drift_triggered=sum(1 for r in runs if r.data.tags.get(C.TAG_TRIGGER_ORIGIN) == "monitor"),
        wall_s=wall,
        cpu_s=cpu,
    )


def champion_cost(
    spec: ModelSpec, settings: Settings | None = None
) -> tuple[str | None, CostSummary | None]:
    """The champion's version and what its training run cost (None where not recorded)."""
    from retrainer import constants as C
    from retrainer.stores.registry import version_by_alias
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(settings or get_settings())
    mv = version_by_alias(client, spec.name, C.ALIAS_CHAMPION)
    if mv is None:
        return None, None
    return str(mv.version), run_cost(client, mv.run_id) if mv.run_id else None
