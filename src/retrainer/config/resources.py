"""What each profile is made of: one builder per profile sets every resource at once, so nothing
else in the code asks which profile is active (Dagster's resources per deployment)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from retrainer.config.secrets import state_secret
from retrainer.config.settings import Settings


@dataclass(frozen=True)
class Resources:
    """What a profile is made of. One builder per profile sets all of it at once, so nothing
    else in the code asks which profile is active."""

    executor: str
    airflow_database_url: str
    tracking_uri: str  # what clients (tasks, serving, CLI) use
    mlflow_server_args: list[str]  # the tracking server's artifacts and app
    work_root: str
    inference_log_root: str
    feedback_root: str
    environment: dict[str, str]  # extra variables for every process of the profile
    shadow_log_root: str = ""  # the challenger's mirrored predictions (serving's shadow log)
    # What the processes that `retrainer up` starts use to reach MLflow once its server runs:
    # through the server, each task process skips opening the SQLite store itself (SQLAlchemy,
    # alembic and a schema check: about 1 s of CPU per task).
    service_tracking_uri: str = ""
    mlflow_auth: bool = False
    # Variables only the tracking server gets: its store's URL, which may hold the database
    # password, goes through its environment (mlflow reads MLFLOW_BACKEND_STORE_URI), not its
    # command line, which any user on the machine can read (`ps`).
    mlflow_server_environment: dict[str, str] = field(default_factory=dict)


def _embedded(s: Settings) -> Resources:
    """One machine, pip only: SQLite everywhere, LocalExecutor, local files, no MLflow auth."""
    tracking = s.mlflow_tracking_uri or f"sqlite:///{s.mlflow_dir / 'mlflow.db'}"
    db = s.airflow_database_url or f"sqlite:///{s.airflow_home / 'airflow.db'}"
    return Resources(
        executor="LocalExecutor",
        airflow_database_url=db,
        tracking_uri=tracking,
        mlflow_server_environment={"MLFLOW_BACKEND_STORE_URI": tracking},
        mlflow_server_args=[
            "--default-artifact-root",
            (s.mlflow_dir / "artifacts").as_uri(),
        ],
        work_root=s.work_uri or str(s.home / "work"),
        inference_log_root=s.inference_log_uri or str(s.home / "inference_log"),
        feedback_root=s.feedback_uri or str(s.home / "feedback"),
        shadow_log_root=s.shadow_log_uri or str(s.home / "shadow_log"),
        service_tracking_uri=s.mlflow_tracking_uri or f"http://{s.host}:{s.mlflow_port}",
        environment={
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(s.task_slots),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            # After a task ends, its downstream task is queued on the scheduler's next loop; an
            # idle scheduler sleeps up to 1 s (Airflow's default) between loops, which was most
            # of the 0.5-0.9 s gap between consecutive tasks here (about 35 of them in the
            # demo's loop). At a quarter second the idle scheduler used 6.2% of a core here; set
            # the variable to choose otherwise.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": os.environ.get(
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME", "0.25"
            ),
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
        service_tracking_uri=s.mlflow_tracking_uri or f"http://{s.host}:{s.mlflow_port}",
        mlflow_server_environment={"MLFLOW_BACKEND_STORE_URI": s.mlflow_database_url},
        mlflow_server_args=[
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
        shadow_log_root=s.shadow_log_uri or f"{bucket}/shadow_log",
        environment={
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.airflow_database_url,
            "AIRFLOW__CELERY__BROKER_URL": s.celery_broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(s.task_slots),
            "MLFLOW_TRACKING_USERNAME": s.mlflow_admin_user,
            "MLFLOW_TRACKING_PASSWORD": str(s.mlflow_admin_password),
            "MLFLOW_AUTH_CONFIG_PATH": str(s.home / "mlflow" / "basic_auth.ini"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or state_secret(s, "mlflow_flask_secret"),
        },
        mlflow_auth=True,
    )


RESOURCE_SETS = {"embedded": _embedded, "production": _production}

# A URL's password as SQLAlchemy reads it (`scheme://user:password@host...`: the user ends at the
# first ":", the password at the first "@"); the same reading covers redis:// and http(s)://.
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*):[^@]*@")


def redact_url(value: str) -> str:
    """``value`` with the password of a URL masked (``postgresql://u:***@host/db``), else as
    given: for printing, logging and tagging resource URLs. Idempotent, and it leaves the rest of
    the text as written, so a redacted value can be compared with another one redacted."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", value, count=1)
