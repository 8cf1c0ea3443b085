"""What `retrainer up` gives each process: no password on a command line, MLflow's auth config
read back as written, the worker's slots from the settings, Airflow migrated again when its
database or version changes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.config.settings import Settings
from retrainer.errors import ConfigError
from retrainer.platform import services

runner = CliRunner()
PG_SECRET = "pg-s3cret"
PRODUCTION = {
    "RETRAINER_PROFILE": "production",
    "RETRAINER_AIRFLOW_DATABASE_URL": f"postgresql+psycopg2://u:{PG_SECRET}@db/airflow",
    "RETRAINER_CELERY_BROKER_URL": "redis://redis:6379/0",
    "RETRAINER_MLFLOW_DATABASE_URL": f"postgresql+psycopg2://u:{PG_SECRET}@db/mlflow",
    "RETRAINER_MLFLOW_ARTIFACTS_URI": "s3://b/mlflow",
    "RETRAINER_MLFLOW_ADMIN_PASSWORD": "admin-p%ss",
    "RETRAINER_AIRFLOW_ADMIN_PASSWORD": "a",
    "RETRAINER_S3_BUCKET": "b",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "k",
}


@pytest.fixture
def production(tmp_path, monkeypatch) -> Settings:
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(tmp_path / "models"))
    return Settings.from_env()


def test_the_mlflow_store_url_goes_through_the_environment_never_a_command_line(production):
    argvs = {svc.name: svc.argv for svc in services.services(production)}
    assert not [name for name, argv in argvs.items() if any(PG_SECRET in a for a in argv)]
    assert "--backend-store-uri" not in argvs["mlflow"]
    mlflow = next(svc for svc in services.services(production) if svc.name == "mlflow")
    url = PRODUCTION["RETRAINER_MLFLOW_DATABASE_URL"]
    assert mlflow.env == {"MLFLOW_BACKEND_STORE_URI": url}
    assert services.mlflow_server_env(production)["MLFLOW_BACKEND_STORE_URI"] == url
    embedded = Settings(home=production.home)
    assert services.mlflow_server_env(embedded)["MLFLOW_BACKEND_STORE_URI"] == (
        f"sqlite:///{embedded.mlflow_dir / 'mlflow.db'}"
    )
    # ... which `mlflow server` reads as its --backend-store-uri
    from mlflow.cli import server

    option = next(p for p in server.params if p.name == "backend_store_uri")
    assert option.envvar == "MLFLOW_BACKEND_STORE_URI"


def test_the_mlflow_server_command_of_the_containers_keeps_the_password_off_its_argv(
    production, monkeypatch
):
    ran: dict[str, object] = {}

    def execvpe(path: str, argv: list[str], env: dict[str, str]) -> None:
        ran.update(argv=argv, env=env)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvpe", execvpe)
    result = runner.invoke(app, ["mlflow-server"])
    assert result.exit_code == 0, result.output
    assert not [a for a in ran["argv"] if PG_SECRET in a]  # type: ignore[attr-defined]
    url = PRODUCTION["RETRAINER_MLFLOW_DATABASE_URL"]
    assert ran["env"]["MLFLOW_BACKEND_STORE_URI"] == url  # type: ignore[index]


def test_the_celery_worker_runs_as_many_tasks_as_the_task_slots(production, monkeypatch):
    monkeypatch.setenv("RETRAINER_TASK_SLOTS", "3")
    argv = {svc.name: svc.argv for svc in services.services(Settings.from_env())}
    worker = argv["airflow-celery-worker"]
    assert worker[worker.index("--concurrency") + 1] == "3"


def test_mlflow_reads_its_auth_config_back_as_written(production, monkeypatch, tmp_path):
    from mlflow.server.auth.config import read_auth_config

    auth_url = "postgresql://u:p%40ss%25@db/auth"  # percent-encoded, as a URL's password is
    monkeypatch.setenv("RETRAINER_MLFLOW_AUTH_DATABASE_URL", auth_url)
    settings = Settings.from_env()
    path = Path(settings.resources.environment["MLFLOW_AUTH_CONFIG_PATH"])
    path.parent.mkdir(parents=True)
    path.write_text("[mlflow]\nadmin_password = old\n")
    path.chmod(0o644)
    os.link(path, tmp_path / "another-name")  # a file others could read, under another name
    assert services.write_mlflow_auth_config(settings) == path
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.admin_password == "admin-p%ss" and config.database_uri == auth_url
    assert config.admin_username == "admin"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Replaced, not rewritten in place: the world-readable file never held the password.
    assert (tmp_path / "another-name").read_text() == "[mlflow]\nadmin_password = old\n"
    monkeypatch.setenv("RETRAINER_MLFLOW_ADMIN_PASSWORD", "two\nlines")
    with pytest.raises(ConfigError, match="admin_password"):
        services.write_mlflow_auth_config(Settings.from_env())


def test_airflow_is_migrated_again_for_a_new_database_or_a_new_airflow(tmp_path, monkeypatch):
    migrations: list[str] = []

    def run_logged(argv: list[str], env: dict[str, str], log: object) -> None:
        if argv[1:3] == ["db", "migrate"]:
            migrations.append(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])

    version = {"apache-airflow": "3.1.0", "apache-airflow-core": "3.1.0"}
    monkeypatch.setattr(services, "run_logged", run_logged)
    monkeypatch.setattr(services.metadata, "version", lambda dist: version[dist])
    (tmp_path / "models").mkdir()

    def init(url: str | None = None) -> int:
        s = Settings(
            home=tmp_path / "state", models_dir=tmp_path / "models", airflow_database_url=url
        )
        services.init_state(s, say=lambda _: None)
        return len(migrations)

    assert init() == 1
    assert init() == 1  # nothing changed: not again
    version.update({"apache-airflow": "3.2.0", "apache-airflow-core": "3.2.0"})
    assert init() == 2  # an upgrade
    assert init("postgresql://u:one@db/airflow") == 3  # another database
    assert init("postgresql://u:two@db/airflow") == 3  # its new password needs no migration
    marker = (tmp_path / "state" / "airflow" / ".migrated").read_text()
    assert "one" not in marker and "two" not in marker
