"""Fault: PostgreSQL restarts while a production-profile retrain trains. Airflow's metadata,
Celery's results and MLflow's store all live in it; Airflow's scheduler, dag-processor and
triggerer exit on losing their database and are started again by the services' supervisor;
the run completes, with one MLflow run and at most one version.

The PostgreSQL is this machine's (the same binaries as the production tests use) but a cluster
of the test's own, on its own port: restarting the shared cluster would also cut every other
test that happens to be using it."""

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from test_production_profile import CANARY, ROOT, api_for

from conftest import answers, free_port
from retrainer import constants as C
from retrainer.config.settings import Settings

pytestmark = [pytest.mark.production, pytest.mark.slow]
PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(os.listdir("/usr/lib/postgresql"))[-1]
        if Path("/usr/lib/postgresql").exists()
        else "x"
    )
    / "bin"
)


def as_postgres(*argv: str) -> subprocess.CompletedProcess:
    cmd = ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def own_postgres():
    if not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="rt-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", free_port()
    init = as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    assert init.returncode == 0, init.stderr

    def pg_ctl(action: str) -> subprocess.CompletedProcess:
        return as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-m", "fast",
            "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {base}", action,
        )  # fmt: skip

    started = pg_ctl("start")
    assert started.returncode == 0, started.stderr
    import psycopg2

    names = {k: f"rt_{k}" for k in ("airflow", "mlflow", "auth")}
    admin = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        for db in names.values():
            cur.execute(f"CREATE DATABASE {db}")
    admin.close()
    urls = {k: f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{v}" for k, v in names.items()}
    try:
        yield urls, lambda: pg_ctl("restart"), port
    finally:
        pg_ctl("stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, own_postgres, redis_url, s3):
    from retrainer.platform import services
    from retrainer.stores import storage

    urls, restart, port = own_postgres
    base = tmp_path_factory.mktemp("pgrestart")
    bucket = f"rt-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    storage.write_bytes(
        f"s3://{bucket}/data/credit_default/base.csv",
        (ROOT / "examples" / "credit" / "batches" / "base.csv").read_bytes(),
    )
    raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    raw["data"]["train"] = f"s3://{bucket}/data/credit_default/"
    raw["monitoring"]["schedule"] = None
    (base / "models").mkdir()
    (base / "models" / "credit_default.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    os.environ["RETRAINER_API_TOKEN"] = f"{CANARY}-token"
    os.environ["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = "20"
    os.environ["AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL"] = "20"
    settings = Settings(
        profile="production",
        home=base / "state",
        models_dir=base / "models",
        airflow_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
        airflow_database_url=urls["airflow"],
        celery_broker_url=redis_url,
        mlflow_database_url=urls["mlflow"],
        mlflow_auth_database_url=urls["auth"],
        mlflow_artifacts_uri=f"s3://{bucket}/mlflow",
        mlflow_admin_password=f"{CANARY}-mlflow",
        airflow_admin_password=f"{CANARY}-airflow",
        s3_bucket=bucket,
    )
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=f"{CANARY}-mlflow")
    try:
        services.start(settings, say=print, timeout=300)
        yield settings, restart, port
    finally:
        services.stop(settings, say=print, timeout=10)
        for name, _, _ in services.status(settings):
            print(name, services.tail_log(settings, name, 8))
        for k in (
            "RETRAINER_API_TOKEN",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
            "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL",
        ):
            os.environ.pop(k, None)


def test_postgresql_restarted_during_a_retrain_is_survived(platform):
    from retrainer.platform import services
    from retrainer.stores.registry import versions_for_run
    from retrainer.stores.tracking import mlflow_client

    settings, restart, port = platform
    api = api_for(settings)
    api.wait_for_dag("credit_default_retrain", timeout=120)
    run_id = api.trigger("credit_default_retrain", {"reason": "postgres restart"})["dag_run_id"]

    def state(task):
        return {
            t["task_id"]: t["state"] for t in api.task_instances("credit_default_retrain", run_id)
        }.get(task)

    deadline = time.monotonic() + 300
    while state("train_candidate") != "running":
        assert time.monotonic() < deadline, "train_candidate never started"
        time.sleep(1)
    before = {n: services.read_pid(settings, n) for n in ("airflow-scheduler", "mlflow")}
    restarted = restart()
    assert restarted.returncode == 0, restarted.stderr
    assert answers(("127.0.0.1", port))
    done = api.wait_for_run("credit_default_retrain", run_id, timeout=900)
    tries = {
        t["task_id"]: (t["state"], t["try_number"])
        for t in api.task_instances("credit_default_retrain", run_id)
    }
    print("after the PostgreSQL restart: task (state, try)", tries)
    assert done["state"] == "success", tries
    # The supervised services are the same processes (their supervisors restarted what exited).
    assert {n: services.read_pid(settings, n) for n in before} == before
    log = (settings.logs_dir / "airflow-scheduler.log").read_text(errors="replace")
    print("scheduler restarts:", log.count("[supervise]"))
    client = mlflow_client(settings)
    mlflow_run = client.search_runs(
        [client.get_experiment_by_name("retrainer/credit_default").experiment_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{run_id}'",
    )
    assert len(mlflow_run) == 1  # retries resumed the same MLflow run
    assert len(versions_for_run(client, "credit_default", mlflow_run[0].info.run_id)) == 1
