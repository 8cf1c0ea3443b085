"""The production profile, natively: Airflow on PostgreSQL with the CeleryExecutor (Redis broker,
PostgreSQL result backend), a Celery worker, MLflow on PostgreSQL with S3 artifacts behind basic
auth, data and logs on S3, serving with a bearer token. The loop runs on it end to end; every
anonymous call is refused; a canary secret appears nowhere; the scheduler, the worker and the
MLflow server killed in the middle of a retrain are survived without registering a version twice."""

import os
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from conftest import CANARY, production_platform
from retrainer import constants as C
from retrainer.config.secrets import airflow_credentials
from retrainer.steps.monitor.window import S3_SETTLE_SECONDS

pytestmark = pytest.mark.production
ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = ROOT / "examples" / "credit" / "traffic"


@pytest.fixture(scope="module")
def platform(tmp_path_factory, postgres, redis_url, s3):
    with production_platform(tmp_path_factory.mktemp("prod"), postgres, redis_url) as running:
        yield running
        for k in (
            "RETRAINER_API_TOKEN",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL",
        ):
            os.environ.pop(k, None)


def retrain_until_training(api, reason: str):
    """Trigger credit_default_retrain and return once train_candidate runs: (run id, a function
    giving a task's current state)."""
    api.wait_for_dag("credit_default_retrain", timeout=120)
    run_id = api.trigger("credit_default_retrain", {"reason": reason})["dag_run_id"]

    def state(task):
        return {
            t["task_id"]: t["state"] for t in api.task_instances("credit_default_retrain", run_id)
        }.get(task)

    deadline = time.monotonic() + 300
    while state("train_candidate") != "running":
        assert time.monotonic() < deadline, "train_candidate never started"
        time.sleep(1)
    return run_id, state


def api_for(settings):
    from retrainer.platform.airflow_api import AirflowClient

    user, password = airflow_credentials(settings)
    return AirflowClient(settings.airflow_url, user, password)


def run_dag(api, dag_id, conf, timeout=600):
    api.wait_for_dag(dag_id, timeout=120)
    run = api.trigger(dag_id, conf)
    return api.wait_for_run(dag_id, run["dag_run_id"], timeout=timeout)


def pg_rows(settings, sql):
    import psycopg2

    url = settings.airflow_database_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def test_anonymous_calls_are_refused(platform):
    settings, _ = platform
    assert httpx.get(f"{settings.airflow_url}/api/v2/dags", timeout=10).status_code == 401
    mlflow = httpx.get(
        f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        timeout=10,
    )
    assert mlflow.status_code == 401
    wrong = httpx.get(
        f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        auth=("admin", "password1234"),
        timeout=10,
    )
    assert wrong.status_code == 401
    assert httpx.get(f"{settings.serving_url}/models", timeout=10).status_code == 401
    assert (
        httpx.post(
            f"{settings.serving_url}/models/credit_default/predict", json={"rows": [{}]}, timeout=10
        ).status_code
        == 401
    )
    assert httpx.get(f"{settings.serving_url}/health", timeout=10).status_code == 200


def test_the_loop_runs_on_the_celery_worker(platform):
    from retrainer.platform.simulate import replay
    from retrainer.spec import find_spec
    from retrainer.steps.monitor.checks import check_for_run
    from retrainer.stores import storage
    from retrainer.stores.tracking import mlflow_client

    settings, bucket = platform
    api = api_for(settings)
    token = os.environ["RETRAINER_API_TOKEN"]
    run = run_dag(api, "credit_default_retrain", {"reason": "production test"})
    assert run["state"] == "success"
    deployed = api.wait_for_run("credit_default_deploy", f"deploy__{run['dag_run_id']}", 300)
    assert deployed["state"] == "success"
    headers = {"authorization": f"Bearer {token}"}
    info = httpx.get(f"{settings.serving_url}/models/credit_default", headers=headers).json()
    assert info["version"] == "1"

    # Shifted traffic and its labelled batch on S3 → the monitor triggers a retrain → v2.
    storage.write_bytes(
        f"s3://{bucket}/data/credit_default/landed-shifted.csv",
        (TRAFFIC / "shifted.csv").read_bytes(),
    )
    sent = replay(
        settings.serving_url,
        "credit_default",
        pd.read_csv(TRAFFIC / "shifted.csv"),
        target="Status",
        labels=True,
        token=token,
        admin_token=token,
    )
    assert sent.failed == 0 and sent.labelled == 950
    time.sleep(S3_SETTLE_SECONDS)  # on S3 a window ends that long before its check
    monitor = run_dag(api, "credit_default_monitor", {})
    assert monitor["state"] == "success"
    spec = find_spec(settings.models_dir, "credit_default")
    found = check_for_run(spec, monitor["dag_run_id"], settings)
    assert found["decision"]["decision"] == "retrain" and found["action"] == "triggered"
    retrained = api.wait_for_run("credit_default_retrain", found["retrain_run_id"], 600)
    assert retrained["state"] == "success"
    client = mlflow_client(settings)
    assert client.get_model_version_by_alias("credit_default", C.ALIAS_CHALLENGER).version == "2"
    # Each version's description is its card, cut to what MLflow's PostgreSQL column holds (a
    # longer one was refused there, and the card update only logged a warning).
    for version in ("1", "2"):
        description = client.get_model_version("credit_default", version).description
        assert f"# Model card: credit_default v{version}" in description, description[:300]
        assert len(description) <= 5000

    # Every task ran on the Celery worker: each successful task instance carries the id of a
    # Celery task, and PostgreSQL (the result backend) holds that task's result. Except the
    # empty direct_deployment of v1's first deployment, which the scheduler completes itself.
    rows = pg_rows(
        settings,
        "select task_id, operator, external_executor_id from task_instance where state = 'success'",
    )
    empty = {
        (task, executor_id) for task, operator, executor_id in rows if operator == "EmptyOperator"
    }
    assert empty == {("direct_deployment", None)}, empty
    ids = {executor_id for _, operator, executor_id in rows if operator != "EmptyOperator"}
    assert len(ids) >= 15 and None not in ids
    deadline = time.monotonic() + 60
    while True:  # a result is stored just after its task instance reports success
        results = {r[0] for r in pg_rows(settings, "select task_id from celery_taskmeta")}
        if ids <= results or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert ids <= results, ids - results
    # MLflow's store is PostgreSQL; artifacts, inference log and feedback are on S3.
    assert settings.tracking_uri.startswith("http://")
    keys = [k for k in storage.list_data_files(f"s3://{bucket}/inference_log/credit_default/")]
    assert keys and storage.list_data_files(f"s3://{bucket}/feedback/credit_default/")
    listing = storage.s3_client().list_objects_v2(Bucket=bucket, Prefix="mlflow/")
    assert any(o["Key"].endswith(".skops") for o in listing.get("Contents", []))


def test_the_canary_secret_is_nowhere(platform):
    from retrainer.stores import storage
    from retrainer.stores.tracking import mlflow_client

    settings, bucket = platform
    hits = []
    for path in (settings.airflow_home / "logs").rglob("*"):
        if path.is_file() and CANARY in path.read_text(errors="replace"):
            hits.append(f"task log {path}")
    for (value,) in pg_rows(settings, "select value::text from xcom"):
        if value and CANARY in value:
            hits.append("xcom")
    client = mlflow_client(settings)
    for exp in client.search_experiments():
        for r in client.search_runs([exp.experiment_id], max_results=500):
            if CANARY in str(r.data.params) or CANARY in str(r.data.tags):
                hits.append(f"mlflow run {r.info.run_id} params/tags")
    s3 = storage.s3_client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="mlflow/"):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith((".json", ".html", ".yaml", ".txt", ".MLmodel", "MLmodel")):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                if CANARY.encode() in body:
                    hits.append(f"artifact {obj['Key']}")
    assert hits == []


def test_scheduler_worker_and_mlflow_restarts_during_a_retrain_are_survived(platform):
    from retrainer.platform import services
    from retrainer.stores.registry import versions_for_run
    from retrainer.stores.tracking import mlflow_client

    settings, _ = platform
    api = api_for(settings)
    run_id, state = retrain_until_training(api, "restart test")
    # The scheduler, the worker running the task and the MLflow server die mid-task; then start.
    for name in ("airflow-scheduler", "airflow-celery-worker", "mlflow"):
        pid = services.read_pid(settings, name)
        os.killpg(pid, signal.SIGKILL)
        time.sleep(2)
    services.start(settings, say=print, timeout=180)
    done = api.wait_for_run("credit_default_retrain", run_id, timeout=600)
    tries = {
        t["task_id"]: t["try_number"] for t in api.task_instances("credit_default_retrain", run_id)
    }
    assert done["state"] == "success", tries
    assert tries["train_candidate"] >= 2  # the lost try failed and a retry finished the run
    client = mlflow_client(settings)
    mlflow_run = client.search_runs(
        [client.get_experiment_by_name("retrainer/credit_default").experiment_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{run_id}'",
    )
    assert len(mlflow_run) == 1  # the retry resumed the same MLflow run
    registered = versions_for_run(client, "credit_default", mlflow_run[0].info.run_id)
    assert len(registered) <= 1  # registered at most once (the gate may reject a rerun)
