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
from pathlib import Path

import pytest
from test_production_profile import api_for, retrain_until_training

from conftest import answers, free_port, production_platform
from retrainer import constants as C

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
    urls, restart, port = own_postgres
    with production_platform(tmp_path_factory.mktemp("pgrestart"), urls, redis_url) as (
        settings,
        _,
    ):
        yield settings, restart, port


def test_postgresql_restarted_during_a_retrain_is_survived(platform):
    from retrainer.platform import services
    from retrainer.stores.registry import versions_for_run
    from retrainer.stores.tracking import mlflow_client

    settings, restart, port = platform
    api = api_for(settings)
    run_id, state = retrain_until_training(api, "postgres restart")
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
