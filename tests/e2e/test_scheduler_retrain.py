"""The whole loop through the real Airflow scheduler, driven over the REST API as `make demo` does:
retrain → deploy → served; base traffic → monitor ok; shifted traffic and its labelled batch →
monitor retrain → v2 trained, gated against v1, rolled out under live traffic (shadow, canary
steps: the shipped spec's rollout), promoted and served."""

import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml
from e2e_platform import running_platform

from retrainer import constants as C
from retrainer.config.secrets import airflow_credentials, serving_admin_token

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = ROOT / "examples" / "credit" / "traffic"


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    # The shipped credit_default spec, training on a folder of its own where batches can land.
    landing = base / "landing"
    shutil.copytree(
        ROOT / "examples" / "credit" / "batches", landing, ignore=shutil.ignore_patterns("landed-*")
    )
    raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    raw["data"]["train"] = str(landing)
    with running_platform(base, {"credit_default": raw}, logs_on_exit=True) as settings:
        yield settings


def test_the_whole_loop_through_the_scheduler(platform):
    import httpx

    from retrainer.platform.airflow_api import AirflowClient
    from retrainer.stores.summaries import retrain_outcome
    from retrainer.stores.tracking import mlflow_client

    settings = platform
    # Every UI and API needs a login.
    assert httpx.get(f"{settings.airflow_url}/api/v2/dags", timeout=10).status_code == 401
    user, password = airflow_credentials(settings)
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
    v1_rows = client.get_run(mv.run_id).data.params["rows.train"]
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
    from retrainer.stores.ledger import history

    assert history(client, "credit_default")[0].action == "initial"

    # --- the monitoring loop ---------------------------------------------------------------
    from retrainer.platform.simulate import replay
    from retrainer.spec import find_spec
    from retrainer.steps.monitor.checks import check_for_run

    spec = find_spec(settings.models_dir, "credit_default")
    admin = serving_admin_token(settings)

    def check():
        api.wait_for_dag("credit_default_monitor", timeout=60)
        mrun = api.trigger("credit_default_monitor", {})
        done = api.wait_for_run("credit_default_monitor", mrun["dag_run_id"], timeout=300)
        states = {
            ti["task_id"]: ti["state"]
            for ti in api.task_instances("credit_default_monitor", mrun["dag_run_id"])
        }
        assert done["state"] == "success", states
        return check_for_run(spec, mrun["dag_run_id"], settings), states

    sent = replay(
        settings.serving_url,
        "credit_default",
        pd.read_csv(TRAFFIC / "base.csv"),
        target="Status",
        labels=True,
        admin_token=admin,
    )
    assert (sent.rows, sent.failed, sent.labelled) == (600, 0, 600)
    found, states = check()
    d = found["decision"]
    assert d["decision"] == "ok" and d["rows"] >= 600, d["reasons"]
    assert d["labels"]["rows"] == 600 and d["labels"]["value"] > 0.75
    assert states["trigger_retrain"] == "skipped" and states["evidently_report"] == "success"

    # The shifted population: its labelled batch lands in the training folder, its rows arrive.
    shutil.copyfile(TRAFFIC / "shifted.csv", Path(spec.data.train) / "landed-shifted.csv")
    sent = replay(
        settings.serving_url,
        "credit_default",
        pd.read_csv(TRAFFIC / "shifted.csv"),
        target="Status",
        labels=True,
        admin_token=admin,
    )
    assert sent.failed == 0 and dict(sent.versions) == {"1": 950}
    found, states = check()
    d = found["decision"]
    assert d["decision"] == "retrain" and {"Age", "Amount"} <= set(d["features"]), d
    assert states["trigger_retrain"] == "success" and found["action"] == "triggered"

    # The check reached the serving API's /metrics, for dashboards and alerts.
    metrics = httpx.get(f"{settings.serving_url}/metrics", timeout=10).text
    assert 'retrainer_psi{feature="Age",model="credit_default"}' in metrics
    assert 'retrainer_retrains_triggered_total{model="credit_default"} 1.0' in metrics
    assert 'retrainer_monitor_checks_total{decision="ok",model="credit_default"} 1.0' in metrics

    retrain_id = found["retrain_run_id"]
    retrained = api.wait_for_run("credit_default_retrain", retrain_id, timeout=600)
    assert retrained["state"] == "success"
    outcome = retrain_outcome("credit_default", "credit_default_retrain", retrain_id, settings)
    assert outcome.gate["decision"] == "passed" and outcome.version == "2", outcome.gate
    assert outcome.gate["champion_version"] == "1"  # gated against v1 on the same test split
    # The shipped spec rolls v2 out through shadow and canary: live traffic while it does.
    stop = threading.Event()

    def traffic():
        rows = pd.read_csv(TRAFFIC / "shifted.csv")
        while not stop.is_set():
            sent = replay(
                settings.serving_url,
                "credit_default",
                rows.sample(100),
                target="Status",
                rate=200,
                batch=5,
            )
            failures.append(sent.failed)

    failures: list[int] = []
    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        redeploy_id = f"deploy__{retrain_id}"
        redeployed = api.wait_for_run("credit_default_deploy", redeploy_id, timeout=400)
    finally:
        stop.set()
        sender.join(30)
    deploy_states = {
        ti["task_id"]: ti["state"]
        for ti in api.task_instances("credit_default_deploy", redeploy_id)
    }
    assert redeployed["state"] == "success", deploy_states
    assert sum(failures) == 0  # clients never saw the challenger's shadow or canary as a fault
    info = httpx.get(f"{settings.serving_url}/models/credit_default", timeout=10).json()
    assert info["version"] == "2"
    entries = [
        e for e in reversed(history(client, "credit_default")) if e.dag_run_id == redeploy_id
    ]
    assert [e.action for e in entries] == [
        "rollout_started",
        "shadow_passed",
        "canary_step",
        "canary_step",
        "promote",
    ], [(e.action, e.reason) for e in entries]
    assert float(entries[1].metrics["agreement"]) >= 0.75
    print(  # the figure for the README: what the rollout adds to the loop
        f"rollout through the scheduler: {(entries[-1].time - entries[0].time) / 1000:.1f} s "
        f"from rollout_started to promote; agreement {entries[1].metrics['agreement']}"
    )
    entry = entries[-1]
    assert (entry.action, entry.from_version, entry.to_version) == ("promote", "1", "2")
    v2_run = client.get_run(client.get_model_version("credit_default", "2").run_id)
    assert v2_run.data.params["rows.train"] != v1_rows  # the landed batch was learned
