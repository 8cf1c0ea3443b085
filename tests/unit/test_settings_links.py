"""Links people follow (alerts, ledger, Models page, CLI) use the UIs' public URLs, never a bind
address such as 0.0.0.0; processes keep reaching the services by their own addresses."""

from retrainer.config.environment import process_environment
from retrainer.config.settings import Settings


def test_a_bind_all_host_is_shown_as_localhost_in_links(tmp_path):
    s = Settings(home=tmp_path, host="0.0.0.0", airflow_port=8081, mlflow_port=5001)
    assert s.airflow_ui_url == "http://localhost:8081"
    assert s.mlflow_ui_url == "http://localhost:5001"
    assert s.airflow_url == "http://0.0.0.0:8081"  # what processes on the machine use


def test_public_urls_from_the_environment_win_and_become_airflows_base_url(tmp_path):
    s = Settings.from_env(
        {
            "RETRAINER_HOME": str(tmp_path),
            "RETRAINER_HOST": "0.0.0.0",
            "RETRAINER_AIRFLOW_PUBLIC_URL": "https://airflow.example.com/",
            "RETRAINER_MLFLOW_PUBLIC_URL": "https://mlflow.example.com",
        }
    )
    assert s.airflow_ui_url == "https://airflow.example.com"
    assert s.mlflow_ui_url == "https://mlflow.example.com"
    assert process_environment(s)["AIRFLOW__API__BASE_URL"] == "https://airflow.example.com"


def test_the_embedded_default_links_are_unchanged(tmp_path):
    s = Settings(home=tmp_path)
    assert s.airflow_ui_url == s.airflow_url == "http://127.0.0.1:8080"
