"""`make demo` run again on the state an earlier run left: the real `retrainer demo` command,
through the real scheduler, on a project of its own (the shipped spec and the example data).

Its story starts from an empty registry (v1 learns the base population; the shifted traffic is new
to it). Run on top of an earlier demo it used to gate the base population's model against the
earlier v2, see the base traffic as drift from v2, and exit 1; now it sets the earlier state
folder aside, whole, starts the platform afresh and tells the story again."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e_platform import champion, running_platform

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        RETRAINER_PROFILE="embedded",
        RETRAINER_HOME=str(settings.home),
        RETRAINER_MODELS_DIR=str(settings.models_dir),
        RETRAINER_AIRFLOW_PORT=str(settings.airflow_port),
        RETRAINER_MLFLOW_PORT=str(settings.mlflow_port),
        RETRAINER_SERVING_PORT=str(settings.serving_port),
        COLUMNS="200",
    )
    exe = Path(sys.executable).parent / "retrainer"
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )


def test_a_second_demo_sets_the_earlier_state_aside_and_tells_the_story_again(tmp_path):
    from mlflow.tracking import MlflowClient

    credit = tmp_path / "examples" / "credit"
    shutil.copytree(ROOT / "examples" / "credit" / "traffic", credit / "traffic")
    (credit / "batches").mkdir()
    shutil.copyfile(
        ROOT / "examples" / "credit" / "batches" / "base.csv", credit / "batches" / "base.csv"
    )
    raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    with running_platform(tmp_path, {"credit_default": raw}, logs_on_exit=True) as settings:
        # an earlier run's state: credit_default v1 registered and serving
        first = cli(settings, "trigger", "credit_default")
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        assert champion(settings, "credit_default") == "1"

        demo = cli(settings, "demo")
        out = demo.stdout
        assert demo.returncode == 0, out[-8000:] + demo.stderr[-4000:]
        assert "credit_default already has v1 here (an earlier demo)" in out
        earlier = sorted(tmp_path.glob("state.earlier-*"))
        assert len(earlier) == 1, f"expected one earlier state folder, found {earlier}"
        assert f"moved to {earlier[0]}" in out
        # the story again, from an empty registry: v1 first, then the drift retrain's v2
        assert "(no champion yet) → v1" in out
        assert "not trusted" in out  # the shifted traffic's estimate, as in a first demo
        # asked through the new MLflow server: this process's SQLite store (MLflow keeps one per
        # URI) still reads the file that was moved aside, where v1 is the champion
        server = MlflowClient(settings.mlflow_url, settings.mlflow_url)
        assert server.get_model_version_by_alias("credit_default", "champion").version == "2"

    # nothing of the earlier state was lost: its registry still holds its v1
    db = earlier[0] / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{db}"
    kept = MlflowClient(uri, uri).search_model_versions("name = 'credit_default'")
    assert [int(mv.version) for mv in kept] == [1]
