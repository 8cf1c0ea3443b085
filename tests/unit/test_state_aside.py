"""Setting the embedded profile's state folder aside (what a rerun of `make demo` does): moved
whole, nothing deleted, and refused before anything changes when part of the state lives
elsewhere."""

import pytest

from retrainer.config.settings import Settings
from retrainer.errors import ServiceError
from retrainer.platform import services


def state(tmp_path, name="state", **kw) -> Settings:
    home = tmp_path / name
    (home / "mlflow").mkdir(parents=True)
    (home / "mlflow" / "mlflow.db").write_bytes(b"registry")
    return Settings(home=home, models_dir=tmp_path / "models", **kw)


def test_the_folder_moves_whole_and_a_second_one_in_the_same_second_gets_its_own_name(tmp_path):
    settings = state(tmp_path)
    said: list[str] = []
    first = services.set_aside(settings, say=said.append)
    assert not settings.home.exists()
    assert first.parent == tmp_path and first.name.startswith("state.earlier-")
    assert (first / "mlflow" / "mlflow.db").read_bytes() == b"registry"
    assert said == [f"state folder {settings.home} moved to {first}"]
    again = state(tmp_path)
    second = services.set_aside(again, say=said.append)
    assert second != first and second.exists() and first.exists()


@pytest.mark.parametrize(
    ("setting", "value", "env"),
    [
        ("inference_log_uri", "s3://logs/served", "RETRAINER_INFERENCE_LOG_URI"),
        ("mlflow_tracking_uri", "http://mlflow.internal:5000", "RETRAINER_MLFLOW_TRACKING_URI"),
        (
            "airflow_database_url",
            "postgresql+psycopg2://a@db/airflow",
            "RETRAINER_AIRFLOW_DATABASE_URL",
        ),
    ],
)
def test_state_partly_elsewhere_is_refused_before_anything_changes(tmp_path, setting, value, env):
    settings = state(tmp_path, **{setting: value})
    assert env in (services.state_outside_home(settings) or "")
    with pytest.raises(ServiceError, match=env):
        services.set_aside(settings, say=lambda _: None)
    assert (settings.home / "mlflow" / "mlflow.db").exists()
    assert not list(tmp_path.glob("state.earlier-*"))


def test_the_production_profile_is_never_one_folder(tmp_path):
    settings = state(tmp_path, profile="production")
    assert "production profile" in (services.state_outside_home(settings) or "")
    assert services.state_outside_home(state(tmp_path, name="plain")) is None
