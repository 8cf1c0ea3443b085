"""The `retrainer` command on its own (no services): validate, specs check, env."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retrainer.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ROOT / "models" / "credit_default.yaml", folder)
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(folder))
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    return folder


def test_validate_good_and_bad_batches(models, tmp_path):
    credit = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    good = runner.invoke(
        app, ["validate", "credit_default", "--data", str(ROOT / "examples/credit/credit_data.csv")]
    )
    assert good.exit_code == 0, good.output
    assert "passed" in good.output
    credit.loc[:30, "Age"] = 150
    bad_path = tmp_path / "bad.csv"
    credit.to_csv(bad_path, index=False)
    html = tmp_path / "report.html"
    bad = runner.invoke(
        app, ["validate", "credit_default", "--data", str(bad_path), "--html", str(html)]
    )
    assert bad.exit_code == 1
    assert (
        "Age: values >= 18 and <= 100; observed min 18, max 150; 31 rows out of range" in bad.output
    )
    assert "FAILED: 1 of" in html.read_text()


def test_validate_unreadable_file(models, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = runner.invoke(app, ["validate", "credit_default", "--data", str(empty)])
    assert result.exit_code == 1 and "the file is empty (0 bytes)" in result.output


def test_specs_check_reports_broken_specs(models):
    ok = runner.invoke(app, ["specs", "check"])
    assert ok.exit_code == 0 and "credit_default_retrain" in ok.output
    (models / "other.yaml").write_text("name: other\ntask: clustering\n")
    broken = runner.invoke(app, ["specs", "check"])
    assert broken.exit_code == 1
    assert "other.yaml" in broken.output and "task: expected input should be" in broken.output
    assert "credit_default_retrain" in broken.output  # the good one is still listed


def test_env_prints_exports_for_the_state_folder(models, tmp_path):
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    lines = dict(line.removeprefix("export ").split("=", 1) for line in result.output.splitlines())
    assert lines["RETRAINER_HOME"] == str(tmp_path / "state")
    assert lines["AIRFLOW_HOME"] == str(tmp_path / "state" / "airflow")
    assert (
        lines["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
        and "state/mlflow" in lines["MLFLOW_TRACKING_URI"]
    )
    assert lines["RETRAINER_MODELS_DIR"] == str(models)


def test_env_never_prints_secrets(models, tmp_path, monkeypatch):
    secret = "canary-env-secret-42"
    for key, value in {
        "RETRAINER_PROFILE": "production",
        "RETRAINER_AIRFLOW_DATABASE_URL": "postgresql+psycopg2://u@db/airflow",
        "RETRAINER_CELERY_BROKER_URL": "redis://redis:6379/0",
        "RETRAINER_MLFLOW_DATABASE_URL": "postgresql+psycopg2://u@db/mlflow",
        "RETRAINER_MLFLOW_ARTIFACTS_URI": "s3://b/mlflow",
        "RETRAINER_MLFLOW_ADMIN_PASSWORD": secret,
        "RETRAINER_AIRFLOW_ADMIN_PASSWORD": secret,
        "RETRAINER_S3_BUCKET": "b",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret,
    }.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert "# RETRAINER_MLFLOW_ADMIN_PASSWORD is set; not printed" in result.output
    assert "export AIRFLOW__CORE__EXECUTOR=CeleryExecutor" in result.output


def test_demo_without_a_running_platform_says_so_at_once(models, tmp_path, monkeypatch):
    import socket

    closed = []
    for _ in range(2):  # ports nothing listens on
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed.append(s.getsockname()[1])
    monkeypatch.setenv("RETRAINER_AIRFLOW_PORT", str(closed[0]))
    monkeypatch.setenv("RETRAINER_MLFLOW_PORT", str(closed[1]))
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert f"Airflow does not answer at http://127.0.0.1:{closed[0]}" in out
    assert "Start it with `retrainer up`" in out
    assert not list(tmp_path.glob("state.earlier-*"))  # nothing was set aside


def test_a_second_demo_at_the_same_time_is_refused(models, tmp_path):
    import fcntl

    with (tmp_path / "state.demo.lock").open("a") as held:  # a demo running on this state
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    assert "another `retrainer demo` is running on" in " ".join(result.output.split())


def test_brackets_in_the_data_are_shown_not_read_as_markup(models, tmp_path):
    """A column named "[/x]" or a value "[red]" is the user's data: Rich must print it as
    written (a closing tag with no opening one raised MarkupError, a traceback)."""
    credit = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv").head(600)
    ref, cur = tmp_path / "ref.csv", tmp_path / "cur.csv"
    credit.rename(columns={"Price": "[/x]"}).to_csv(ref, index=False)
    odd = credit.rename(columns={"Price": "[/x]"})
    odd["Home"] = odd["Home"].where(odd.index % 2 == 0, "[red]x[/red]")
    odd.to_csv(cur, index=False)
    drift = runner.invoke(app, ["drift", "-r", str(ref), "-c", str(cur)])
    assert drift.exception is None or isinstance(drift.exception, SystemExit), drift.output
    assert "[/x]" in drift.output
    bad = tmp_path / "bad.csv"
    odd.to_csv(bad, index=False)
    validate = runner.invoke(app, ["validate", "credit_default", "--data", str(bad)])
    assert validate.exit_code == 1, validate.output
    assert "[red]x[/red]" in validate.output  # the offending value, as written


def test_drift_bins_are_bounded_before_any_work(models, tmp_path):
    ref = ROOT / "examples" / "credit" / "credit_data.csv"
    result = runner.invoke(app, ["drift", "-r", str(ref), "-c", str(ref), "--bins", "10000000000"])
    assert result.exit_code == 2
    assert "--bins" in result.output and "less than or equal to 100" in result.output


def test_validate_html_target_is_checked_before_the_suite_runs(models, tmp_path):
    data = str(ROOT / "examples" / "credit" / "credit_data.csv")
    missing = runner.invoke(
        app,
        ["validate", "credit_default", "--data", data, "--html", str(tmp_path / "no" / "r.html")],
    )
    assert missing.exit_code == 1
    assert f"its folder {tmp_path / 'no'} does not exist" in missing.output
    folder = runner.invoke(
        app, ["validate", "credit_default", "--data", data, "--html", str(tmp_path)]
    )
    assert folder.exit_code == 1 and "is a folder" in folder.output


@pytest.mark.parametrize(
    "args, says",
    [
        (["simulate", "credit_default", "--data", "x.csv", "--batch", "0"], "--batch"),
        (["simulate", "credit_default", "--data", "x.csv", "--limit", "0"], "--limit"),
        (["rollback", "credit_default", "--version", "1_0"], "expected a version number"),
        (["rollback", "credit_default", "--version", "\u0661"], "expected a version number"),
        (["history", "o'neil"], 'no model spec named "o\'neil"'),
        (["card", "nope/1"], "nope"),
    ],
)
def test_odd_arguments_are_messages_not_tracebacks(models, args, says):
    result = runner.invoke(app, args)
    assert result.exit_code in (1, 2), result.output
    assert says in result.output and "Traceback" not in result.output, result.output


def test_an_unreachable_or_garbled_airflow_is_a_message(monkeypatch):
    import httpx

    from retrainer.errors import AirflowAPIError
    from retrainer.platform.airflow_api import AirflowClient

    with pytest.raises(AirflowAPIError, match="could not be reached .*ConnectError"):
        AirflowClient("http://127.0.0.1:9", "u", "p").get_dag("x")

    def through_a_proxy(method, url, **kwargs):  # a login page where Airflow's JSON should be
        page = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>login</html>"))
        with httpx.Client(transport=page) as http:
            return http.request(method, url, json=kwargs.get("json"))

    monkeypatch.setattr(httpx, "request", through_a_proxy)
    with pytest.raises(AirflowAPIError, match="not JSON"):
        AirflowClient("http://airflow", "u", "p").get_dag("x")
