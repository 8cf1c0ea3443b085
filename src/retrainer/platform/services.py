"""Start, stop and inspect the platform's processes for a state folder.

Each service is a plain process group with a pid file and a log under the state folder, so
`retrainer down` can stop exactly what `retrainer up` started, from any shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from retrainer.config.environment import process_environment
from retrainer.config.secrets import airflow_credentials
from retrainer.config.settings import Settings
from retrainer.errors import ServiceError
from retrainer.orchestration.teams import spec_teams, team_environment, write_team_bundles


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None = None  # None: alive is healthy


def venv_bin() -> Path:
    """Where this installation's console scripts (airflow, mlflow, retrainer) are: beside the
    interpreter in a virtualenv, ~/.local/bin for a per-user install (the official Airflow
    image's layout: python in /usr/local/bin, packages installed with pip --user)."""
    here = Path(sys.executable).parent
    if (here / "airflow").exists():
        return here
    user = Path(sysconfig.get_path("scripts", f"{os.name}_user"))
    return user if (user / "airflow").exists() else here


def mlflow_server_argv(settings: Settings) -> list[str]:
    """The MLflow tracking server of the profile (store, artifacts, auth app)."""
    return [
        str(venv_bin() / "mlflow"),
        "server",
        *settings.resources.mlflow_server_args,
        "--host",
        settings.host,
        "--port",
        str(settings.mlflow_port),
        "--workers",
        "1",
    ]


FORKING_COMMANDS = (["scheduler"], ["celery", "worker"])  # what forks Airflow's task processes


def airflow_argv(args: list[str]) -> list[str]:
    """The command line of `airflow <args>`; the commands that fork task processes go through
    platform.preload, so each task starts with the task libraries imported."""
    if any(args[: len(cmd)] == cmd for cmd in FORKING_COMMANDS):
        return [sys.executable, "-m", "retrainer.platform.preload", *args]
    return [str(venv_bin() / "airflow"), *args]


AIRFLOW_HEALTH = "/api/v2/monitor/health"  # the api-server's, unauthenticated


def services(settings: Settings) -> list[Service]:
    """Airflow's parts (plus a Celery worker in production), the MLflow server, serving."""
    airflow = str(venv_bin() / "airflow")
    workers = (
        [Service("airflow-celery-worker", airflow_argv(["celery", "worker", "--concurrency", "2"]))]
        if settings.resources.executor == "CeleryExecutor"
        else []
    )
    return [
        Service("mlflow", mlflow_server_argv(settings), f"{settings.mlflow_url}/health"),
        Service("airflow-dag-processor", [airflow, "dag-processor"]),
        Service("airflow-scheduler", airflow_argv(["scheduler"])),
        Service("airflow-triggerer", [airflow, "triggerer"]),
        *workers,
        Service(
            "serving",
            [str(venv_bin() / "retrainer"), "serve"],
            f"{settings.serving_url}/health",
        ),
        Service(
            "airflow-api-server",
            [airflow, "api-server", "--host", settings.host, "--port", str(settings.airflow_port)],
            f"{settings.airflow_url}{AIRFLOW_HEALTH}",
        ),
    ]


def service_env(settings: Settings, through_server: bool = False) -> dict[str, str]:
    """The environment of a platform process: every setting; with `through_server` (the services
    that `start` runs beside the MLflow server), MLflow reached through that server."""
    env = dict(os.environ)
    env.update(process_environment(settings))
    env.update(team_environment(spec_teams(settings.models_dir), team_bundles_dir(settings)))
    if through_server:
        uri = settings.resources.service_tracking_uri
        env.update(MLFLOW_TRACKING_URI=uri, RETRAINER_MLFLOW_TRACKING_URI=uri)
    env.setdefault("AIRFLOW__API__WORKERS", "1")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # MLflow's server-side job runner (GenAI judges, prompt optimisation) starts seven ~250 MB
    # worker processes; retrainer uses none of it.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def team_bundles_dir(settings: Settings) -> Path:
    return settings.airflow_home / "team-bundles"


def pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def read_pid(settings: Settings, name: str) -> int | None:
    path = pid_file(settings, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def healthy(url: str | None, timeout: float = 2.0) -> bool:
    if url is None:
        return True
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def init_state(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Create the state folder and migrate both metadata databases, once."""
    for d in (
        settings.home,
        settings.airflow_home,
        settings.mlflow_dir,
        settings.logs_dir,
        settings.run_dir,
    ):
        d.mkdir(parents=True, exist_ok=True)
    (settings.mlflow_dir / "artifacts").mkdir(exist_ok=True)
    airflow_credentials(settings)
    env = service_env(settings)
    marker = settings.airflow_home / ".migrated"
    if not marker.exists():
        say(
            f"Migrating the Airflow metadata database in {settings.airflow_home} (first use, ~30 s)..."
        )
        run_logged(
            [str(venv_bin() / "airflow"), "db", "migrate"],
            env,
            settings.logs_dir / "airflow-db-migrate.log",
        )
        marker.touch()
    # Multi-team mode: each team's bundle of DAG files, and the teams in Airflow's database.
    teams = spec_teams(settings.models_dir)
    write_team_bundles(teams, team_bundles_dir(settings))
    synced = team_bundles_dir(settings) / ".teams"
    if teams and (not synced.exists() or synced.read_text() != ",".join(teams)):
        run_logged(
            [str(venv_bin() / "airflow"), "teams", "sync"],
            env,
            settings.logs_dir / "airflow-teams.log",
        )
        synced.write_text(",".join(teams))
    if settings.resources.mlflow_auth:
        write_mlflow_auth_config(settings)
    if settings.s3_bucket:
        ensure_bucket(settings.s3_bucket, say)
    mlflow_marker = settings.mlflow_dir / ".migrated"
    if not mlflow_marker.exists() and settings.tracking_uri.startswith("sqlite:"):
        say(f"Creating the MLflow store {settings.tracking_uri} (first use)...")
        code = "from mlflow.tracking import MlflowClient; MlflowClient().search_experiments()"
        run_logged([sys.executable, "-c", code], env, settings.logs_dir / "mlflow-db-init.log")
        mlflow_marker.touch()


def write_mlflow_auth_config(settings: Settings) -> Path:
    """MLflow's basic-auth app config: the admin from configuration, users in PostgreSQL."""
    path = Path(settings.resources.environment["MLFLOW_AUTH_CONFIG_PATH"])
    path.parent.mkdir(parents=True, exist_ok=True)
    auth_db = settings.mlflow_auth_database_url or f"sqlite:///{settings.mlflow_dir / 'auth.db'}"
    path.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {auth_db}\n"
        f"admin_username = {settings.mlflow_admin_user}\n"
        f"admin_password = {settings.mlflow_admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {max(0, settings.mlflow_auth_cache_seconds)}\n"
    )
    path.chmod(0o600)
    return path


def ensure_bucket(bucket: str, say: Callable[[str], None] = print) -> None:
    """Create the S3 bucket for data, logs and MLflow artifacts if it does not exist."""
    from retrainer.stores import storage

    client = storage.s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except Exception:
        say(f"Creating S3 bucket {bucket}...")
        try:
            client.create_bucket(Bucket=bucket)
        except Exception as exc:
            raise ServiceError(
                f"S3 bucket {bucket!r} does not exist and could not be created ({exc}); check "
                "AWS_ENDPOINT_URL and the credentials, or create it"
            ) from None


def run_logged(argv: list[str], env: dict[str, str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(
            argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise ServiceError(
            f"`{' '.join(argv[:3])}` failed (exit {proc.returncode}); log {log}:\n{tail}"
        )


def start(settings: Settings, say: Callable[[str], None] = print, timeout: float = 180.0) -> None:
    init_state(settings, say)
    started: list[Service] = []
    for svc in services(settings):
        if read_pid(settings, svc.name):
            say(f"{svc.name}: already running")
            continue
        if svc.health_url and healthy(svc.health_url):
            raise ServiceError(
                f"{svc.name}: something else already answers at {svc.health_url}; stop it or choose "
                "another port (RETRAINER_AIRFLOW_PORT / RETRAINER_MLFLOW_PORT)"
            )
        log = (settings.logs_dir / f"{svc.name}.log").open("ab")
        # Under a supervisor that restarts it if it exits on its own (Airflow's parts exit
        # when PostgreSQL restarts); `stop` signals the group, which holds both.
        proc = subprocess.Popen(
            [sys.executable, "-m", "retrainer.platform.supervise", svc.name, "--", *svc.argv],
            env=service_env(settings, through_server=svc.name != "mlflow"),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=settings.home,
        )
        pid_file(settings, svc.name).write_text(str(proc.pid))
        started.append(svc)
        say(f"{svc.name}: started (pid {proc.pid}, log {settings.logs_dir / (svc.name + '.log')})")
    deadline = time.monotonic() + timeout
    for svc in started:
        while not healthy(svc.health_url):
            if read_pid(settings, svc.name) is None:
                log_tail = tail_log(settings, svc.name)
                raise ServiceError(
                    f"{svc.name} exited during start-up; last log lines:\n{log_tail}"
                )
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{svc.name} did not become healthy in {timeout:.0f} s; see its log"
                )
            time.sleep(1)
        say(f"{svc.name}: ready")


def tail_log(settings: Settings, name: str, lines: int = 25) -> str:
    path = settings.logs_dir / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(settings: Settings, say: Callable[[str], None] = print, timeout: float = 30.0) -> None:
    for svc in reversed(services(settings)):
        pid = read_pid(settings, svc.name)
        if pid is None:
            pid_file(settings, svc.name).unlink(missing_ok=True)
            continue
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
        pid_file(settings, svc.name).unlink(missing_ok=True)
        say(f"{svc.name}: stopped")


# Settings that put part of the embedded profile's state outside its state folder.
STATE_ELSEWHERE = (
    "mlflow_tracking_uri",
    "airflow_database_url",
    "work_uri",
    "inference_log_uri",
    "feedback_uri",
    "shadow_log_uri",
)


def state_outside_home(settings: Settings) -> str | None:
    """Why the platform's state is not all in its state folder, or None when it is."""
    if settings.profile != "embedded":
        return f"the {settings.profile} profile keeps it in its database and bucket"
    moved = [f"RETRAINER_{name.upper()}" for name in STATE_ELSEWHERE if getattr(settings, name)]
    return f"{', '.join(moved)} put part of it elsewhere" if moved else None


def set_aside(settings: Settings, say: Callable[[str], None] = print) -> Path:
    """Stop every service and move the state folder aside, whole (nothing is deleted), so the
    next `start` begins from an empty platform. Only for the embedded profile, whose whole state
    is that folder (the production profile's lives in PostgreSQL and a bucket). Returns where
    the earlier state now is."""
    elsewhere = state_outside_home(settings)
    if elsewhere:
        raise ServiceError(f"the state cannot be set aside as one folder: {elsewhere}")
    stop(settings, say)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = settings.home.with_name(f"{settings.home.name}.earlier-{stamp}")
    n = 1
    while target.exists():  # two in one second
        n += 1
        target = settings.home.with_name(f"{settings.home.name}.earlier-{stamp}-{n}")
    settings.home.rename(target)
    say(f"state folder {settings.home} moved to {target}")
    return target


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def status(settings: Settings) -> list[tuple[str, str, str]]:
    """(service, state, detail) for each service."""
    rows = []
    for svc in services(settings):
        pid = read_pid(settings, svc.name)
        if pid is None:
            rows.append((svc.name, "stopped", ""))
        elif healthy(svc.health_url):
            rows.append((svc.name, "running", f"pid {pid}"))
        else:
            rows.append((svc.name, "unhealthy", f"pid {pid}, not answering {svc.health_url}"))
    return rows
