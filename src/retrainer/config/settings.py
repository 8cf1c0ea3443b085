"""Platform settings: one typed object, read from `RETRAINER_*` environment variables.

Nothing reads configuration at import time: callers ask for `get_settings()` when they need it,
so tests (and the CLI) can point a whole process at another state folder by changing the
environment.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

PROJECT_ROOT = Path(__file__).resolve().parents[3]
"""The checkout this package was installed from (editable install): holds dags/ and models/."""

Profile = Literal["embedded", "production"]
PROFILES = ("embedded", "production")


@dataclass
class Settings:
    """Where state lives and how to reach the services. Every field has a `RETRAINER_` env var
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

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(
                f"RETRAINER_PROFILE: expected one of {PROFILES}; found {self.profile!r}"
            )
        self.home = Path(self.home).expanduser().resolve()
        self.models_dir = Path(self.models_dir).expanduser().resolve()
        self.dags_dir = Path(self.dags_dir).expanduser().resolve()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"RETRAINER_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            if f.name.endswith("_port"):
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ValueError(
                        f"RETRAINER_{f.name.upper()}: expected a port number; found {raw!r}"
                    ) from None
            else:
                values[f.name] = raw
        return cls(**values)

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

    @staticmethod
    def api_token_from_env() -> str | None:
        """RETRAINER_API_TOKEN: when set, every serving endpoint but /health needs it."""
        return os.environ.get("RETRAINER_API_TOKEN") or None

    def serving_admin_token(self) -> str:
        """The token for /reload: RETRAINER_API_TOKEN if set, else one generated in the state folder."""
        return self.api_token_from_env() or self.state_secret("serving_admin_token")

    def state_secret(self, name: str) -> str:
        """A secret generated once and kept (mode 600) in the state folder."""
        path = self.home / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def airflow_passwords_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json"

    def airflow_credentials(self) -> tuple[str, str]:
        """The Airflow UI/API login: from configuration in production (RETRAINER_AIRFLOW_ADMIN_
        PASSWORD), else generated once per state folder; kept in Airflow's passwords file."""
        path = self.airflow_passwords_file
        users: dict[str, str] = {}
        if path.exists():
            users = json.loads(path.read_text() or "{}")
        wanted = self.airflow_admin_password
        if self.airflow_user not in users or (wanted and users[self.airflow_user] != wanted):
            users[self.airflow_user] = wanted or secrets.token_urlsafe(12)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(users))
            path.chmod(0o600)
        return self.airflow_user, users[self.airflow_user]

    def environment(self) -> dict[str, str]:
        """The variables that point Airflow, MLflow and retrainer at this state folder."""
        venv_bin = str(Path(sys.executable).parent)
        path = os.environ.get("PATH", "")
        if venv_bin not in path.split(os.pathsep):
            path = venv_bin + os.pathsep + path
        # Every setting, so each process (serving, every task) resolves the same ones.
        own = {
            f"RETRAINER_{f.name.upper()}": str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None and f.name != "dags_dir"
        }
        return {
            **own,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            **self.resources.environment,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.airflow_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.airflow_passwords_file),
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__BASE_URL": self.airflow_url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
            "PATH": path,
        }


@dataclass(frozen=True)
class Resources:
    """What a profile is made of. One builder per profile sets all of it at once, so nothing
    else in the code asks which profile is active."""

    executor: str
    airflow_database_url: str
    tracking_uri: str  # what clients (tasks, serving, CLI) use
    mlflow_server_args: list[str]  # the tracking server's store, artifacts and app
    work_root: str
    inference_log_root: str
    feedback_root: str
    environment: dict[str, str]  # extra variables for every process of the profile
    mlflow_auth: bool = False


def _embedded(s: Settings) -> Resources:
    """One machine, pip only: SQLite everywhere, LocalExecutor, local files, no MLflow auth."""
    tracking = s.mlflow_tracking_uri or f"sqlite:///{s.mlflow_dir / 'mlflow.db'}"
    db = s.airflow_database_url or f"sqlite:///{s.airflow_home / 'airflow.db'}"
    return Resources(
        executor="LocalExecutor",
        airflow_database_url=db,
        tracking_uri=tracking,
        mlflow_server_args=[
            "--backend-store-uri",
            tracking,
            "--default-artifact-root",
            (s.mlflow_dir / "artifacts").as_uri(),
        ],
        work_root=s.work_uri or str(s.home / "work"),
        inference_log_root=s.inference_log_uri or str(s.home / "inference_log"),
        feedback_root=s.feedback_uri or str(s.home / "feedback"),
        environment={
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
        },
    )


MLFLOW_DEFAULT_ADMIN_PASSWORD = "password1234"  # what MLflow's basic-auth app ships with


def _production(s: Settings) -> Resources:
    """PostgreSQL, CeleryExecutor on Redis, MLflow server on PostgreSQL with proxied S3
    artifacts behind basic auth, data and logs on S3."""
    from retrainer.errors import ConfigError

    needed = {
        "RETRAINER_AIRFLOW_DATABASE_URL": s.airflow_database_url,
        "RETRAINER_CELERY_BROKER_URL": s.celery_broker_url,
        "RETRAINER_MLFLOW_DATABASE_URL": s.mlflow_database_url,
        "RETRAINER_MLFLOW_ARTIFACTS_URI": s.mlflow_artifacts_uri,
        "RETRAINER_MLFLOW_ADMIN_PASSWORD": s.mlflow_admin_password,
        "RETRAINER_AIRFLOW_ADMIN_PASSWORD": s.airflow_admin_password,
        "RETRAINER_S3_BUCKET": s.s3_bucket,
    }
    missing = [k for k, v in needed.items() if not v]
    if missing:
        raise ConfigError(
            f"RETRAINER_PROFILE=production needs {', '.join(missing)}; set them in the "
            "environment (see .env.example and the README's production section)"
        )
    if s.mlflow_admin_password == MLFLOW_DEFAULT_ADMIN_PASSWORD:
        raise ConfigError(
            "RETRAINER_MLFLOW_ADMIN_PASSWORD is MLflow's published default; choose another"
        )
    bucket = f"s3://{s.s3_bucket}"
    assert s.airflow_database_url and s.celery_broker_url and s.mlflow_database_url
    result_backend = s.celery_result_backend or "db+" + s.airflow_database_url
    return Resources(
        executor="CeleryExecutor",
        airflow_database_url=s.airflow_database_url,
        tracking_uri=s.mlflow_tracking_uri or f"http://{s.host}:{s.mlflow_port}",
        mlflow_server_args=[
            "--backend-store-uri",
            s.mlflow_database_url,
            "--artifacts-destination",
            str(s.mlflow_artifacts_uri),
            "--serve-artifacts",
            "--default-artifact-root",
            "mlflow-artifacts:/",
            "--app-name",
            "basic-auth",
        ],
        work_root=s.work_uri or f"{bucket}/work",
        inference_log_root=s.inference_log_uri or f"{bucket}/inference_log",
        feedback_root=s.feedback_uri or f"{bucket}/feedback",
        environment={
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.airflow_database_url,
            "AIRFLOW__CELERY__BROKER_URL": s.celery_broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "MLFLOW_TRACKING_USERNAME": s.mlflow_admin_user,
            "MLFLOW_TRACKING_PASSWORD": str(s.mlflow_admin_password),
            "MLFLOW_AUTH_CONFIG_PATH": str(s.home / "mlflow" / "basic_auth.ini"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or s.state_secret("mlflow_flask_secret"),
        },
        mlflow_auth=True,
    )


RESOURCE_SETS = {"embedded": _embedded, "production": _production}


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
