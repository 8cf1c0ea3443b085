"""The platform commands on their own: `retrainer env` prints no password, not even inside a
URL; bad settings are one line of error in every command, never a traceback."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.config.resources import redact_url

runner = CliRunner()


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://u:pa%40ss@db.internal:5432/mlflow?sslmode=require",
        "db+postgresql://u:with/slash@db/airflow",
        "redis://:redis-pw@redis:6379/0",
        "https://user:tok@mlflow.example.com/",
    ],
)
def test_a_url_password_is_masked_as_sqlalchemy_masks_it(url):
    assert redact_url(url) == make_url(url).render_as_string(hide_password=True)
    assert redact_url(redact_url(url)) == redact_url(url)


@pytest.mark.parametrize(
    "value",
    ["sqlite:////tmp/x.db", "s3://bucket/a:b", "http://host:5000/path", "postgresql://u@db/x", "x"],
)
def test_a_value_without_a_password_is_left_as_it_is(value):
    assert redact_url(value) == value


def test_env_masks_the_passwords_in_urls(state, monkeypatch):
    secrets = ("pg-s3cret", "redis-s3cret")
    for key, value in {
        "RETRAINER_PROFILE": "production",
        "RETRAINER_AIRFLOW_DATABASE_URL": "postgresql+psycopg2://u:pg-s3cret@db/airflow",
        "RETRAINER_CELERY_BROKER_URL": "redis://:redis-s3cret@redis:6379/0",
        "RETRAINER_MLFLOW_DATABASE_URL": "postgresql+psycopg2://u:pg-s3cret@db/mlflow",
        "RETRAINER_MLFLOW_ARTIFACTS_URI": "s3://b/mlflow",
        "RETRAINER_MLFLOW_ADMIN_PASSWORD": "m",
        "RETRAINER_AIRFLOW_ADMIN_PASSWORD": "a",
        "RETRAINER_S3_BUCKET": "b",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "k",
    }.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0, result.output
    assert not [s for s in secrets if s in result.output]
    lines = result.output.splitlines()
    said = "(holds a password; not printed: `retrainer airflow ...` and `retrainer mlflow ...` run with it set)"
    assert (
        f"# AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://u:***@db/airflow {said}"
    ) in lines
    assert f"# AIRFLOW__CELERY__BROKER_URL=redis://:***@redis:6379/0 {said}" in lines
    assert "export RETRAINER_MLFLOW_ARTIFACTS_URI=s3://b/mlflow" in lines


@pytest.mark.parametrize("command", [["down"], ["status"], ["env"], ["init"], ["models"]])
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RETRAINER_TASK_SLOTS", "0", "RETRAINER_TASK_SLOTS must be at least 1"),
        ("RETRAINER_MLFLOW_PORT", "five", "RETRAINER_MLFLOW_PORT: expected a whole number"),
        ("RETRAINER_PROFILE", "staging", "RETRAINER_PROFILE: expected one of"),
    ],
)
def test_bad_settings_are_a_message_not_a_traceback(
    state, monkeypatch, command, variable, value, message
):
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, command)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert message in result.output


def test_an_incomplete_production_profile_is_a_message_in_status_and_env(state, monkeypatch):
    monkeypatch.setenv("RETRAINER_PROFILE", "production")
    for command in (["status"], ["env"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), command
        assert "RETRAINER_PROFILE=production needs" in result.output
