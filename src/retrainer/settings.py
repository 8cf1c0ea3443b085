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

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.mlflow_dir / "artifacts").as_uri()

    @property
    def work_root(self) -> str:
        return self.work_uri or str(self.home / "work")

    @property
    def inference_log_root(self) -> str:
        return self.inference_log_uri or str(self.home / "inference_log")

    @property
    def feedback_root(self) -> str:
        return self.feedback_uri or str(self.home / "feedback")

    @property
    def serving_url(self) -> str:
        return f"http://{self.host}:{self.serving_port}"

    @staticmethod
    def api_token_from_env() -> str | None:
        """RETRAINER_API_TOKEN: when set, every serving endpoint but /health needs it."""
        return os.environ.get("RETRAINER_API_TOKEN") or None

    def serving_admin_token(self) -> str:
        """The token for /reload: RETRAINER_API_TOKEN if set, else one generated in the state folder."""
        token = self.api_token_from_env()
        if token:
            return token
        path = self.home / "serving_admin_token"
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
        """The Airflow UI/API login, generated once per state folder and kept in it."""
        path = self.airflow_passwords_file
        users: dict[str, str] = {}
        if path.exists():
            users = json.loads(path.read_text() or "{}")
        if self.airflow_user not in users:
            users[self.airflow_user] = secrets.token_urlsafe(12)
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
        return {
            "RETRAINER_HOME": str(self.home),
            "RETRAINER_MODELS_DIR": str(self.models_dir),
            "RETRAINER_PROFILE": self.profile,
            "RETRAINER_AIRFLOW_PORT": str(self.airflow_port),
            "RETRAINER_MLFLOW_PORT": str(self.mlflow_port),
            "RETRAINER_SERVING_PORT": str(self.serving_port),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
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
class RunContext:
    """Who is running a pipeline step: ties MLflow runs and model versions to a DAG run."""

    dag_id: str
    run_id: str
    task_id: str = ""
    try_number: int = 1
    triggered_by: str = "manual"


def get_settings() -> Settings:
    return Settings.from_env()
