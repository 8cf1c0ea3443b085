"""Platform settings: one typed object, read from `RETRAINER_*` environment variables.

Nothing reads configuration at import time: callers ask for `get_settings()` when they need it,
so tests (and the CLI) can point a whole process at another state folder by changing the
environment.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package was installed from (editable install): holds dags/ and models/."""

Profile = Literal["embedded", "production"]


class Settings(BaseSettings):
    """Where state lives and how to reach the services. Every field has a `RETRAINER_` env var."""

    model_config = SettingsConfigDict(env_prefix="RETRAINER_", extra="ignore")

    profile: Profile = "embedded"
    home: Path = Field(default=Path(".retrainer"), description="the one folder all state lives in")
    models_dir: Path = Field(default=Path("models"), description="one YAML model spec per model")
    dags_dir: Path = Field(default=PROJECT_ROOT / "dags")
    host: str = "127.0.0.1"
    airflow_port: int = 8080
    mlflow_port: int = 5000
    airflow_user: str = "admin"
    mlflow_tracking_uri: str | None = Field(
        default=None, description="default: the SQLite store under home (no server needed)"
    )
    work_uri: str | None = Field(
        default=None, description="where per-run snapshots go; local path or s3://bucket/prefix"
    )

    def model_post_init(self, __context: object) -> None:
        self.home = self.home.expanduser().resolve()
        self.models_dir = self.models_dir.expanduser().resolve()
        self.dags_dir = self.dags_dir.expanduser().resolve()

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
        venv_bin = str(Path(os.sys.executable).parent)
        path = os.environ.get("PATH", "")
        if venv_bin not in path.split(os.pathsep):
            path = venv_bin + os.pathsep + path
        return {
            "RETRAINER_HOME": str(self.home),
            "RETRAINER_MODELS_DIR": str(self.models_dir),
            "RETRAINER_PROFILE": self.profile,
            "RETRAINER_AIRFLOW_PORT": str(self.airflow_port),
            "RETRAINER_MLFLOW_PORT": str(self.mlflow_port),
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
    return Settings()
