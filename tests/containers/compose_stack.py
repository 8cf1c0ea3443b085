"""The compose stack the containers test drives: Docker made available, the project's .env,
docker-compose with the stand-ins override, health waits."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROJECT = "retrainer-ct"
IMAGE = "retrainer:0.4.0"
TIMINGS: dict[str, float] = {}
T0 = time.monotonic()


def _banner(message: str) -> None:
    print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)


def _run(cmd: list[str] | str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        shell=isinstance(cmd, str),
        **kw,
    )


def _daemon_answers() -> bool:
    return (
        shutil.which("docker") is not None and _run(["docker", "info"], timeout=30).returncode == 0
    )


def ensure_docker() -> None:
    """Docker CLI, docker-compose and debootstrap from Debian; dockerd started if none answers."""
    missing = [
        t for t in ("docker", "docker-compose", "debootstrap", "dockerd") if not shutil.which(t)
    ]
    if missing:
        apt = _run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "docker.io docker-compose debootstrap",
            timeout=900,
        )
        if apt.returncode != 0:
            _banner(f"CONTAINERS NOT TESTED: installing docker.io failed:\n{apt.stderr[-2000:]}")
            pytest.skip("docker.io could not be installed")
    if _daemon_answers():
        return
    log = open("/tmp/retrainer-dockerd.log", "ab")  # noqa: SIM115 (the daemon outlives this call)
    subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    for _ in range(60):
        if _daemon_answers():
            return
        time.sleep(1)
    tail = Path("/tmp/retrainer-dockerd.log").read_text(errors="replace")[-2000:]
    _banner(f"CONTAINERS NOT TESTED: no Docker daemon could be started here; dockerd said:\n{tail}")
    pytest.skip("no Docker daemon")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    env_file: Path
    env: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)

    def compose(
        self, *args: str, timeout: float = 900, check: bool = True
    ) -> subprocess.CompletedProcess:
        cmd = [
            "docker-compose",
            "-p",
            PROJECT,
            "--env-file",
            str(self.env_file),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(HERE / "compose.standins.yml"),
            *args,
        ]
        proc = _run(cmd, timeout=timeout, cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`{' '.join(cmd[-len(args) :])}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def containers(self) -> dict[str, str]:
        """service -> container id, for every container of the project (running or not)."""
        out = _run(
            [
                "docker",
                "ps",
                "-a",
                "--filter",
                f"label=com.docker.compose.project={PROJECT}",
                "--format",
                '{{.ID}} {{.Label "com.docker.compose.service"}}',
            ],
        ).stdout
        return {
            svc: cid for cid, svc in (line.split() for line in out.splitlines() if line.strip())
        }

    def wait_healthy(self, timeout: float = 1200) -> dict[str, str]:
        """Every service healthy by its own health check; airflow-init exited 0."""
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {}
            for svc, cid in self.containers().items():
                fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}"
                status, health, code = _run(["docker", "inspect", "-f", fmt, cid]).stdout.split()
                if svc == "airflow-init":
                    states[svc] = (
                        "done" if status == "exited" and code == "0" else f"{status}:{code}"
                    )
                    if status == "exited" and code != "0":
                        raise AssertionError(
                            f"airflow-init failed:\n{self.compose('logs', '--no-color', 'airflow-init').stdout[-4000:]}"
                        )
                else:
                    states[svc] = health if status == "running" else f"{status}:{code}"
            if states and all(s in ("healthy", "done") for s in states.values()):
                return states
            time.sleep(5)
        logs = self.compose("logs", "--no-color", "--tail", "40", check=False).stdout
        raise AssertionError(
            f"not every service became healthy in {timeout:.0f} s: {states}\n{logs[-12000:]}"
        )


def write_env(path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """.env.example with every secret replaced and free host ports (other work may hold the
    defaults)."""
    import base64

    ports = {
        "AIRFLOW_PORT": free_port(),
        "MLFLOW_PORT": free_port(),
        "SERVING_PORT": free_port(),
        "MINIO_PORT": free_port(),
        "MINIO_CONSOLE_PORT": free_port(),
        "PROMETHEUS_PORT": free_port(),
        "GRAFANA_PORT": free_port(),
    }
    env: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if "change-me" in value:
            value = f"ct-{secrets.token_urlsafe(18)}"
        env[key] = value
    env["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env["RETRAINER_IMAGE"] = IMAGE
    env.update({k: str(v) for k, v in ports.items()})
    env["AIRFLOW_PUBLIC_URL"] = f"http://localhost:{ports['AIRFLOW_PORT']}"
    env["MLFLOW_PUBLIC_URL"] = f"http://localhost:{ports['MLFLOW_PORT']}"
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    path.chmod(0o600)
    return env, ports
