"""Platform settings: one typed object, read from `RETRAINER_*` environment variables.

Nothing reads configuration at import time: callers ask for `get_settings()` when they need it,
so tests (and the CLI) can point a whole process at another state folder by changing the
environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from retrainer.config.resources import Resources

PROJECT_ROOT = Path(__file__).resolve().parents[3]
"""The checkout this package was installed from (editable install): holds dags/ and models/."""

Profile = Literal["embedded", "production"]
PROFILES = ("embedded", "production")


@dataclass(frozen=True)
class Settings:
    """Where state lives and how to reach the services, as frozen values. Every field has a `RETRAINER_` env var
    (RETRAINER_HOME, RETRAINER_MODELS_DIR, ...). A plain dataclass on purpose: DAG files read it
    at parse time, and pydantic-settings alone would cost ~80 ms of each parse."""

    profile: Profile = "embedded"
    home: Path = Path(".retrainer")  # the one folder all state lives in
    models_dir: Path = Path("models")  # one YAML model spec per model
    dags_dir: Path = PROJECT_ROOT / "dags"
    host: str = "127.0.0.1"
    airflow_port: int = 8080
    mlflow_port: int = 5000
    serving_port: int = 8000
    airflow_user: str = "admin"
    mlflow_tracking_uri: str | None = None  # default: the SQLite store under home (no server)
    work_uri: str | None = None  # per-run snapshots; local path or s3://bucket/prefix
    inference_log_uri: str | None = None  # serving's request log; local path or s3://
    feedback_uri: str | None = None  # late labels sent to /feedback; local path or s3://
    serving_endpoint: str | None = None  # how clients reach serving, if not http://host:port
    # Production profile: where each resource lives (secrets only from the environment).
    airflow_database_url: str | None = None  # postgresql+psycopg2://...
    celery_broker_url: str | None = None  # redis://...
    celery_result_backend: str | None = None  # db+postgresql://...
    mlflow_database_url: str | None = None  # postgresql://... (the tracking server's store)
    mlflow_auth_database_url: str | None = None  # postgresql://... (basic-auth users)
    mlflow_artifacts_uri: str | None = None  # s3://bucket/prefix, proxied by the server
    mlflow_admin_user: str = "admin"
    mlflow_admin_password: str | None = None
    airflow_admin_password: str | None = None
    s3_bucket: str | None = None  # default home of work/, inference_log/, feedback/
    # How many tasks run at once on a worker (Celery concurrency, the LocalExecutor's
    # parallelism), and the OpenMP/BLAS threads each task gets (0: the cores / task_slots).
    task_slots: int = 2
    threads: int = 0
    # Data snapshots of retrain runs (work/<model>/<run>/): kept while their version is
    # registered; the others (rejected, failed or deleted versions) for this many days.
    snapshot_days: int = 30
    # OpenLineage (Airflow's provider): the transport as JSON, none: no lineage events.
    lineage_transport: str | None = None
    lineage_namespace: str = "retrainer"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(
                f"RETRAINER_PROFILE: expected one of {PROFILES}; found {self.profile!r}"
            )
        if self.task_slots < 1 or self.threads < 0:
            raise ValueError(
                "RETRAINER_TASK_SLOTS must be at least 1 and RETRAINER_THREADS at least 0 "
                f"(0: fit the worker); found {self.task_slots} and {self.threads}"
            )
        for name in ("home", "models_dir", "dags_dir"):  # frozen: set once, here
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"RETRAINER_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            if f.type in ("int", int):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(
                        f"RETRAINER_{f.name.upper()}: expected a whole number; found {raw!r}"
                    ) from None
            else:
                values[f.name] = raw
        return cls(**values)

    @property
    def task_threads(self) -> int:
        """OpenMP/BLAS threads per task: never more, all tasks together, than the cores."""
        return self.threads or max(1, (os.cpu_count() or 1) // self.task_slots)

    # Derived locations: derived, never stored, so they can't disagree with `home`.
    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def resources(self) -> Resources:
        """Every resource of the active profile, switched together (see `Resources`)."""
        from retrainer.config.resources import RESOURCE_SETS

        return RESOURCE_SETS[self.profile](self)

    @property
    def tracking_uri(self) -> str:
        return self.resources.tracking_uri

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    def artifact_location(self, name: str) -> str | None:
        """Where a new experiment's artifacts go: None through a tracking server (it decides);
        under the state folder for a direct store, which would otherwise use ./mlruns."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return f"{self.artifact_root}/{name}"

    @property
    def work_root(self) -> str:
        return self.resources.work_root

    @property
    def inference_log_root(self) -> str:
        return self.resources.inference_log_root

    @property
    def feedback_root(self) -> str:
        return self.resources.feedback_root

    @property
    def serving_url(self) -> str:
        return self.serving_endpoint or f"http://{self.host}:{self.serving_port}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def airflow_passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"


@dataclass(frozen=True)
class RunContext:
    """Who is running a pipeline step: ties MLflow runs and model versions to a DAG run."""

    dag_id: str
    run_id: str
    task_id: str = ""
    try_number: int = 1
    triggered_by: str = "manual"


def get_settings() -> Settings:
    return Settings.from_env()
