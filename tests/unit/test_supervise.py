"""The service supervisor: a service that exits on its own (Airflow's scheduler when PostgreSQL
restarts) is started again; a start-up failure is reported, not looped; a stop stops both."""

import os
import signal
import subprocess
import sys
import time

import pytest

from retrainer.platform import supervise as sup

COUNTING_CHILD = (
    "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
    "p.write_text(str(int(p.read_text() or 0) + 1)); sys.exit(int(sys.argv[2]))"
)


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(sup, "RESTART_DELAY", 0.05)
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_a_service_that_exits_is_restarted_until_the_limit(quick, monkeypatch, tmp_path):
    monkeypatch.setattr(sup, "FIRST_RUN_GRACE", 0.0)
    monkeypatch.setattr(sup, "MAX_RESTARTS", 2)
    runs = tmp_path / "runs"
    runs.write_text("")
    code = sup.supervise("svc", [sys.executable, "-c", COUNTING_CHILD, str(runs), "3"])
    assert code == 3 and runs.read_text() == "3"  # the first run and two restarts


def test_a_start_up_failure_is_not_retried(quick, tmp_path):
    runs = tmp_path / "runs"
    runs.write_text("")
    code = sup.supervise("svc", [sys.executable, "-c", COUNTING_CHILD, str(runs), "1"])
    assert code == 1 and runs.read_text() == "1"


def test_sigterm_to_the_group_stops_supervisor_and_service(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrainer.platform.supervise", "svc", "--", "sleep", "60"],
        start_new_session=True,
    )
    time.sleep(1.5)
    children = subprocess.run(
        ["pgrep", "-g", str(proc.pid), "-f", "sleep 60"], capture_output=True, text=True
    ).stdout.split()
    assert children, "the service did not start in the supervisor's group"
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) is not None
    time.sleep(0.2)
    for pid in children:  # reaped by the supervisor before it exited
        assert not os.path.exists(f"/proc/{pid}")
