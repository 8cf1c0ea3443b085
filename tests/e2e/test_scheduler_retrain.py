"""The retrain DAG through the real Airflow scheduler, triggered over the REST API, as `make demo` does."""

import socket
from pathlib import Path

import pytest

from retrainer import constants as C
from retrainer.settings import Settings

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    from retrainer import services

    settings = Settings(
        home=tmp_path_factory.mktemp("e2e") / "state",
        models_dir=ROOT / "models",
        airflow_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
    )
    try:
        services.start(settings, say=print, timeout=240)
        yield settings
    finally:
        services.stop(settings, say=print)
        for name, _, _ in services.status(settings):
            print(name, services.tail_log(settings, name, 5))


def test_retrain_then_deploy_through_scheduler(platform):
    import httpx

    from retrainer.airflow_api import AirflowClient
    from retrainer.pipeline import mlflow_client
    from retrainer.report import retrain_outcome

    settings = platform
    # Every UI and API needs a login.
    assert httpx.get(f"{settings.airflow_url}/api/v2/dags", timeout=10).status_code == 401
    user, password = settings.airflow_credentials()
    api = AirflowClient(settings.airflow_url, user, password)
    api.wait_for_dag("credit_default_retrain", timeout=120)
    run = api.trigger("credit_default_retrain", {"reason": "e2e"})
    done = api.wait_for_run("credit_default_retrain", run["dag_run_id"], timeout=600)
    states = {
        ti["task_id"]: ti["state"]
        for ti in api.task_instances("credit_default_retrain", run["dag_run_id"])
    }
    assert done["state"] == "success", states
    assert set(states.values()) == {"success"}

    client = mlflow_client(settings)
    mv = client.get_model_version_by_alias("credit_default", C.ALIAS_CHAMPION)
    assert str(mv.version) == "1" and mv.tags[C.TAG_DAG_RUN_ID] == run["dag_run_id"]
    outcome = retrain_outcome(
        "credit_default", "credit_default_retrain", run["dag_run_id"], settings
    )
    assert outcome.gate["decision"] == "passed" and outcome.version == "1"
    # The MLflow UI server answers on the same store.
    assert httpx.get(f"{settings.mlflow_url}/health", timeout=10).status_code == 200
    resp = httpx.get(
        f"{settings.mlflow_url}/api/2.0/mlflow/registered-models/get",
        params={"name": "credit_default"},
        timeout=10,
    )
    assert resp.status_code == 200 and resp.json()["registered_model"]["name"] == "credit_default"

    # The retrain run triggered the deploy DAG; the scheduler ran it and serving answers with v1.
    deploy_run = f"deploy__{run['dag_run_id']}"
    api.wait_for_dag("credit_default_deploy", timeout=60)
    deployed = api.wait_for_run("credit_default_deploy", deploy_run, timeout=300)
    deploy_states = {
        ti["task_id"]: ti["state"] for ti in api.task_instances("credit_default_deploy", deploy_run)
    }
    assert deployed["state"] == "success", deploy_states
    assert deploy_states["smoke_test"] == "success" and deploy_states["rollback"] == "skipped"
    info = httpx.get(f"{settings.serving_url}/models/credit_default", timeout=10).json()
    assert info["version"] == "1"
    row = {c["name"]: (30.0 if c["type"] == "double" else "rent") for c in info["inputs"]}
    row.update(Home="rent", Marital="married", Records="no", Job="fixed")
    answer = httpx.post(
        f"{settings.serving_url}/models/credit_default/predict", json={"rows": [row]}, timeout=10
    )
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    from retrainer.ledger import history

    assert history(client, "credit_default")[0].action == "initial"
