"""The production profile's services on this machine: PostgreSQL and Redis (found, or started
with the machine's own commands), and an S3-compatible endpoint on loopback (moto's server)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import testenv  # noqa: E402,F401  (an isolated environment before Airflow is imported)

PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
}


def answers(addr, timeout=1.0) -> bool:
    try:
        with socket.create_connection(addr, timeout=timeout):
            return True
    except OSError:
        return False


def find_or_start(name: str, addr) -> None:
    if answers(addr):
        return
    subprocess.run(START[name], shell=True, capture_output=True, timeout=60, check=False)
    for _ in range(30):
        if answers(addr):
            return
        time.sleep(1)
    message = (
        f"PRODUCTION PROFILE NOT TESTED: {name} is not answering on {addr[0]}:{addr[1]} and "
        f"`{START[name]}` did not start it"
    )
    print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# A secret that must appear in no log, artifact, param or tag (test_production_profile checks).
CANARY = f"canary-{uuid.uuid4().hex}"
TEST_ENV = {
    "RETRAINER_API_TOKEN": f"{CANARY}-token",
    # A lost worker's task is failed (then retried) after 20 s without a heartbeat, not 5 min.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    # A restarted scheduler adopts a dead one's tasks after 20 s, not 5 min.
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "20",
    "MLFLOW_TRACKING_USERNAME": "admin",
    "MLFLOW_TRACKING_PASSWORD": f"{CANARY}-mlflow",
}


@contextmanager
def production_platform(base: Path, databases: dict[str, str], redis_url: str):
    """The production profile started natively under `base` (Airflow on PostgreSQL with Celery on
    Redis, MLflow on PostgreSQL with S3 artifacts, auth everywhere) for the shipped credit_default
    spec training from an S3 prefix of a fresh bucket; yields (settings, bucket); stops everything
    and restores the environment afterwards."""
    import yaml

    from retrainer.config.settings import Settings
    from retrainer.platform import services
    from retrainer.stores import storage

    root = Path(__file__).resolve().parents[2]
    bucket = f"rt-{uuid.uuid4().hex[:10]}"
    storage.s3_client().create_bucket(Bucket=bucket)
    # The training data on S3: a prefix that grows as labelled batches land.
    storage.write_bytes(
        f"s3://{bucket}/data/credit_default/base.csv",
        (root / "examples" / "credit" / "batches" / "base.csv").read_bytes(),
    )
    raw = yaml.safe_load((root / "models" / "credit_default.yaml").read_text())
    raw["data"]["train"] = f"s3://{bucket}/data/credit_default/"
    raw["monitoring"]["schedule"] = None
    (base / "models").mkdir()
    (base / "models" / "credit_default.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    saved = {k: os.environ.get(k) for k in TEST_ENV}
    os.environ.update(TEST_ENV)
    settings = Settings(
        profile="production",
        home=base / "state",
        models_dir=base / "models",
        airflow_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
        airflow_database_url=databases["airflow"],
        celery_broker_url=redis_url,
        mlflow_database_url=databases["mlflow"],
        mlflow_auth_database_url=databases["auth"],
        mlflow_artifacts_uri=f"s3://{bucket}/mlflow",
        mlflow_admin_password=f"{CANARY}-mlflow",
        airflow_admin_password=f"{CANARY}-airflow",
        s3_bucket=bucket,
    )
    try:
        services.start(settings, say=print, timeout=300)
        yield settings, bucket
    finally:
        services.stop(settings, say=print, timeout=10)
        for name, _, _ in services.status(settings):
            print(name, services.tail_log(settings, name, 8))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def postgres():
    find_or_start("PostgreSQL", PG)
    import psycopg2

    prefix = f"rt_{uuid.uuid4().hex[:8]}"
    names = {k: f"{prefix}_{k}" for k in ("airflow", "mlflow", "auth")}
    admin = psycopg2.connect(host=PG[0], port=PG[1], user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        for db in names.values():
            cur.execute(f"CREATE DATABASE {db}")
    yield {k: f"postgresql+psycopg2://postgres@{PG[0]}:{PG[1]}/{v}" for k, v in names.items()}
    with admin.cursor() as cur:
        for db in names.values():
            cur.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    admin.close()


@pytest.fixture(scope="session")
def redis_url():
    find_or_start("Redis", REDIS)
    import redis

    # A database of its own (1-15), emptied before and after.
    db = 1 + uuid.uuid4().int % 15
    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=db)
    client.flushdb()
    yield f"redis://{REDIS[0]}:{REDIS[1]}/{db}"
    client.flushdb()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        if answers(("127.0.0.1", port)):
            break
        time.sleep(0.2)
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("landed-*"))
