"""The production profile's services on this machine: PostgreSQL and Redis (found, or started
with the machine's own commands), and an S3-compatible endpoint on loopback (moto's server)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
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
