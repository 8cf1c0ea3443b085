"""The containers test: docker-compose.yml for real, on images built here (`make images`).

Collected only by `make test-containers` (RETRAINER_TEST_CONTAINERS=1), never by `make test`.
Docker is installed (Debian's docker.io, docker-compose, debootstrap) and its daemon started if
needed; the test is skipped, loudly, only when no Docker daemon can be had.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compose_stack import ROOT, T0, TIMINGS, Stack, _run, ensure_docker, write_env  # noqa: E402

ENABLED = os.environ.get("RETRAINER_TEST_CONTAINERS") == "1"
if not ENABLED:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def images() -> None:
    ensure_docker()
    started = time.monotonic()
    proc = _run(["bash", str(ROOT / "infra/images/build.sh")], timeout=2400, cwd=ROOT)
    TIMINGS["make images"] = time.monotonic() - started
    print(proc.stdout[-3000:], file=sys.stderr)
    assert proc.returncode == 0, (
        f"make images failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    )


@pytest.fixture(scope="session")
def stack(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env_file = tmp_path_factory.mktemp("compose") / "env"
    env, ports = write_env(env_file)
    st = Stack(
        env_file,
        env,
        {
            "airflow": ports["AIRFLOW_PORT"],
            "mlflow": ports["MLFLOW_PORT"],
            "serving": ports["SERVING_PORT"],
            "minio": ports["MINIO_PORT"],
            "prometheus": ports["PROMETHEUS_PORT"],
        },
    )
    st.compose("down", "-v", "--remove-orphans", check=False)
    started = time.monotonic()
    st.compose("up", "-d", "--no-build")
    st.wait_healthy()
    TIMINGS["compose up until every service is healthy"] = time.monotonic() - started
    try:
        yield st
    finally:
        if os.environ.get("RETRAINER_KEEP_STACK") != "1":
            st.compose("down", "-v", "--remove-orphans", check=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ENABLED or not TIMINGS:
        return
    terminalreporter.section("containers test timings")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name}: {seconds:.0f} s")
    terminalreporter.write_line(f"whole session: {time.monotonic() - T0:.0f} s")
