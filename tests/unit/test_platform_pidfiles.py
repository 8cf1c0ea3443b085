"""Pid files: a pid the kernel gave to another process since (the service died, a reboot) is
never signalled nor taken for a running service; `down` stops every service a pid file names,
whatever the profile `up` ran; another user's process is a message, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.config.settings import Settings
from retrainer.errors import ServiceError
from retrainer.platform import services

runner = CliRunner()


@pytest.fixture
def settings(tmp_path) -> Settings:
    s = Settings(home=tmp_path / "state", models_dir=tmp_path / "models")
    s.run_dir.mkdir(parents=True)
    return s


def supervised(spawn, settings: Settings, name: str) -> subprocess.Popen[bytes]:
    """A service's supervisor as `services.start` runs it: in its own session, in the state
    folder."""
    return spawn(supervisor(name), cwd=settings.home)


@pytest.fixture
def spawn() -> Iterator:
    """Start processes in their own session, as `services.start` does; kill what is left."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, start_new_session=True, cwd=cwd)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def supervisor(name: str) -> list[str]:
    """What `services.start` runs a service under."""
    return [sys.executable, "-m", "retrainer.platform.supervise", name, "--", "sleep", "60"]


def record(settings: Settings, name: str, pid: int, legacy: bool) -> None:
    """A pid file as `start` writes it, or as it did before start times were recorded."""
    if legacy:
        services.pid_file(settings, name).write_text(str(pid))
    else:
        services.write_pid_file(settings, name, pid)


def test_the_start_time_is_read_past_a_command_name_with_spaces_and_parentheses(spawn):
    rest = " ".join(["S", *map(str, range(4, 22)), "987654", *map(str, range(23, 53))])
    fields = services.parse_proc_stat(f"4242 (a) R 1 (b) {rest}\n".encode())
    assert fields is not None and fields[0] == "S" and fields[19] == "987654"
    # A real process whose name looks like the end of one and the start of the fields.
    code = "open('/proc/self/comm', 'w').write(') Z 1 2 (x'); import time; time.sleep(60)"
    proc = spawn([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).name() != ") Z 1 2 (x" and time.monotonic() < deadline:
        time.sleep(0.05)
    ticks = services.process_start(proc.pid)
    expected = (psutil.Process(proc.pid).create_time() - psutil.boot_time()) * os.sysconf(
        "SC_CLK_TCK"
    )
    assert ticks is not None and abs(int(ticks) - expected) <= 1
    assert services.alive(proc.pid)  # not taken for a zombie by its name's "Z"


@pytest.mark.parametrize("written", ["legacy", "legacy, another state folder", "wrong start"])
def test_a_stale_pid_file_is_removed_and_its_pid_never_signalled(
    settings, spawn, written, tmp_path
):
    if written == "legacy":  # a pid only: an unrelated session leader (not our supervisor)
        other = spawn(["sleep", "60"])
        text = f"{other.pid}"
    elif written == "legacy, another state folder":  # the same service of another `up`
        other = spawn(supervisor("serving"), cwd=tmp_path)
        text = f"{other.pid}"
    else:  # our supervisor's very command line, but not the process that was recorded
        other = supervised(spawn, settings, "serving")
        text = f"{other.pid}\n{int(services.process_start(other.pid) or 0) - 1}\n"
    path = services.pid_file(settings, "serving")
    path.write_text(text)
    assert services.read_pid(settings, "serving") is None
    assert not path.exists()
    path.write_text(text)
    services.stop(settings, say=lambda _: None, timeout=2)
    assert other.poll() is None, "down signalled a process it did not start"
    assert not path.exists()


def test_a_service_an_older_version_started_is_still_recognised_and_stopped(settings, spawn):
    proc = supervised(spawn, settings, "serving")
    record(settings, "serving", proc.pid, legacy=True)
    assert services.read_pid(settings, "serving") == proc.pid
    said: list[str] = []
    services.stop(settings, say=said.append, timeout=5)
    assert said == ["serving: stopped"]
    assert proc.wait(timeout=10) is not None


@pytest.mark.parametrize("legacy", [False, True])
def test_down_stops_every_service_with_a_pid_file_whatever_the_profile(settings, spawn, legacy):
    procs = {
        name: supervised(spawn, settings, name) for name in ("airflow-celery-worker", "serving")
    }
    for name, proc in procs.items():
        record(settings, name, proc.pid, legacy)
        assert services.read_pid(settings, name) == proc.pid
    assert settings.profile == "embedded"  # started by `up --profile production`, say
    worker = procs["airflow-celery-worker"].pid
    assert ("airflow-celery-worker", "running", f"pid {worker}") in services.status(settings)
    said: list[str] = []
    services.stop(settings, say=said.append, timeout=5)
    assert said == ["serving: stopped", "airflow-celery-worker: stopped"]
    assert all(proc.wait(timeout=10) is not None for proc in procs.values())
    assert list(settings.run_dir.glob("*.pid")) == []


def test_services_stop_in_the_reverse_of_their_start_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "k")
    production = Settings(
        profile="production",
        home=tmp_path,
        airflow_database_url="postgresql://a@db/airflow",
        celery_broker_url="redis://redis:6379/0",
        mlflow_database_url="postgresql://a@db/mlflow",
        mlflow_artifacts_uri="s3://b/mlflow",
        mlflow_admin_password="m",
        airflow_admin_password="a",
        s3_bucket="b",
    )
    assert [s.name for s in services.services(production)] == list(services.START_ORDER)
    embedded = [s.name for s in services.services(Settings(home=tmp_path))]
    assert embedded == [n for n in services.START_ORDER if n != "airflow-celery-worker"]
    assert services.stop_order(["mlflow", "serving", "future-thing", "airflow-celery-worker"]) == [
        "future-thing",
        "serving",
        "airflow-celery-worker",
        "mlflow",
    ]


@pytest.mark.parametrize("legacy", [False, True])
def test_a_process_of_another_user_is_a_message_not_a_traceback(
    settings, spawn, monkeypatch, tmp_path, legacy
):
    proc = supervised(spawn, settings, "serving")
    record(settings, "serving", proc.pid, legacy)

    def refuse(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "killpg", refuse)
    monkeypatch.setattr(os, "kill", lambda pid, sig: None if sig == 0 else refuse(pid, sig))
    with pytest.raises(ServiceError, match=rf"serving \(pid {proc.pid}\).*another user"):
        services.stop(settings, say=lambda _: None, timeout=1)
    assert services.pid_file(settings, "serving").exists()  # still running: still recorded
    monkeypatch.setenv("RETRAINER_HOME", str(settings.home))
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(tmp_path / "models"))
    result = runner.invoke(app, ["down"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "another user" in result.output


def test_down_leaves_no_process_of_a_services_group_behind(settings, spawn, tmp_path):
    """A service whose child outlives it on SIGTERM (a Celery worker's log server did, and stayed
    for good): `down` waits for the whole group, then kills what is left."""
    pid_path = tmp_path / "grandchild.pid"
    lingerer = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(pid_path)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    service = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {lingerer!r}]); time.sleep(120)"
    argv = [sys.executable, "-m", "retrainer.platform.supervise", "worker", "--"]
    proc = spawn([*argv, sys.executable, "-c", service], cwd=settings.home)
    deadline = time.monotonic() + 20
    while not pid_path.exists() or not pid_path.read_text():
        assert time.monotonic() < deadline, "the service never started its child"
        time.sleep(0.05)
    grandchild = psutil.Process(int(pid_path.read_text()))
    services.write_pid_file(settings, "worker", proc.pid)
    began = time.monotonic()
    services.stop(settings, say=lambda _: None, timeout=3)
    assert time.monotonic() - began >= 2.5  # it waited for the group, not only the supervisor
    proc.wait(timeout=10)

    def gone() -> bool:  # killed: gone, or a zombie until whoever adopted it reaps it
        try:
            return not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(), grandchild
