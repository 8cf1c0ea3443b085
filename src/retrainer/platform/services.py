"""Start, stop and inspect the platform's processes for a state folder.

Each service is a plain process group with a pid file and a log under the state folder, so
`retrainer down` can stop exactly what `retrainer up` started, from any shell. The pid file
also holds the process's start time: a pid the kernel has since given to another process (after
the service died, or a reboot) is told apart, and never signalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx

from retrainer.config.environment import process_environment
from retrainer.config.resources import redact_url
from retrainer.config.secrets import airflow_credentials, write_private
from retrainer.config.settings import Settings
from retrainer.errors import ConfigError, ServiceError
from retrainer.orchestration.teams import spec_teams, team_environment, write_team_bundles


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str | None = None  # None: alive is healthy
    env: dict[str, str] = field(default_factory=dict)  # its own variables, beyond service_env


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
    """The MLflow tracking server of the profile (artifacts, auth app); its store comes through
    the environment (`mlflow_server_env`): the URL may hold a password, a command line is public."""
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


def mlflow_server_env(settings: Settings) -> dict[str, str]:
    """The MLflow tracking server's environment: a platform process's, plus its store."""
    return {**service_env(settings), **settings.resources.mlflow_server_environment}


AIRFLOW_HEALTH = "/api/v2/monitor/health"  # the api-server's, unauthenticated

# Every service `start` may start, in the order it starts them (either profile); `stop` goes the
# other way: the UIs and serving first, MLflow, which the others report to, last.
START_ORDER = (
    "mlflow",
    "airflow-dag-processor",
    "airflow-scheduler",
    "airflow-triggerer",
    "airflow-celery-worker",
    "serving",
    "airflow-api-server",
)


def services(settings: Settings) -> list[Service]:
    """Airflow's parts (plus a Celery worker in production), the MLflow server, serving."""
    airflow = str(venv_bin() / "airflow")
    slots = str(settings.task_slots)
    workers = (
        [
            Service(
                "airflow-celery-worker", airflow_argv(["celery", "worker", "--concurrency", slots])
            )
        ]
        if settings.resources.executor == "CeleryExecutor"
        else []
    )
    return [
        Service(
            "mlflow",
            mlflow_server_argv(settings),
            f"{settings.mlflow_url}/health",
            env=settings.resources.mlflow_server_environment,
        ),
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


SUPERVISOR = "retrainer.platform.supervise"  # the module each service runs under


@dataclass(frozen=True)
class PidRecord:
    """A pid file: the service's supervisor and when it started (`process_start`), so that the
    same pid held by another process later is not taken for it. `started` is None in a file
    written before start times were recorded."""

    pid: int
    started: str | None


def write_pid_file(settings: Settings, name: str, pid: int) -> None:
    """Record a service's pid and start time; replaced at once, so a reader never sees half."""
    started = process_start(pid)
    write_private(pid_file(settings, name), f"{pid}\n{started or ''}\n")


def read_pid_file(path: Path) -> PidRecord | None:
    try:
        lines = path.read_text().split("\n")
        return PidRecord(
            int(lines[0].strip()), (lines[1].strip() if len(lines) > 1 else "") or None
        )
    except (OSError, ValueError):
        return None


def read_pid(settings: Settings, name: str) -> int | None:
    """The pid of the running service `name`, or None. A pid file that names no process, or
    another process than the one `start` recorded, is stale: it is removed."""
    record = _own_record(settings, name)
    return record.pid if record else None


def _own_record(settings: Settings, name: str) -> PidRecord | None:
    path = pid_file(settings, name)
    record = read_pid_file(path)
    if record is not None and is_service_process(record, name, settings.home):
        return record
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
    return None


def is_service_process(record: PidRecord, name: str, home: Path) -> bool:
    """Whether the process `record` names is still the one `start` started for `name`: alive,
    and started when recorded. A file from before start times were recorded counts as ours only
    while its pid leads its own session running the supervisor of `name` in the state folder
    `home` (what `start` makes), so `down` after an upgrade still stops what an older `up`
    started."""
    if not alive(record.pid):
        return False
    if record.started is not None:
        return process_start(record.pid) == record.started
    try:
        leads = os.getsid(record.pid) == record.pid
    except OSError:
        return False
    argv = process_argv(record.pid)
    supervises = any(argv[i : i + 2] == [SUPERVISOR, name] for i in range(len(argv) - 1))
    try:
        here = Path(os.readlink(f"/proc/{record.pid}/cwd")) == home
    except FileNotFoundError:
        here = not Path("/proc/self/cwd").exists()  # no /proc to tell: the command line decides
    except OSError:
        here = False
    return leads and supervises and here


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's
    # A zombie child of ours counts as dead.
    fields = _proc_stat(pid)
    return not fields or fields[0] != "Z"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (the first is field 3, the state),
    or None without one. The name is in parentheses and may hold spaces and parentheses itself,
    so the fields start after the last closing one."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    return parse_proc_stat(text)


def parse_proc_stat(text: bytes) -> list[str] | None:
    _, paren, rest = text.rpartition(b")")
    return rest.decode("ascii", "replace").split() if paren else None


def process_start(pid: int) -> str | None:
    """When the process started, as a token that differs between two processes that held the
    same pid: field 22 of /proc/<pid>/stat (clock ticks after boot); `ps`'s start time where
    there is no /proc. None: no such process (or it cannot be read)."""
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[19] if len(fields) > 19 else None
    if Path("/proc/self/stat").exists():
        return None  # /proc works, this process is gone
    return _ps(pid, "lstart")


def process_argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace").split("\0")
    except OSError:
        return (_ps(pid, "command") or "").split()


def _ps(pid: int, column: str) -> str | None:
    try:
        out = subprocess.run(
            ["ps", "-o", f"{column}=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


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
    key = airflow_migration_key(settings)
    if not marker.exists() or marker.read_text().strip() != key:
        say(
            f"Migrating the Airflow metadata database {redact_url(settings.resources.airflow_database_url)} "
            "(first use, a new database or a new Airflow; ~30 s)..."
        )
        run_logged(
            [str(venv_bin() / "airflow"), "db", "migrate"],
            env,
            settings.logs_dir / "airflow-db-migrate.log",
        )
        marker.write_text(key + "\n")
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


def airflow_migration_key(settings: Settings) -> str:
    """What Airflow's schema was last migrated for: the database (its URL, the password left
    out: a new password needs no migration) and the installed Airflow. The `.migrated` marker
    holds it, so a new database or an upgrade runs `airflow db migrate` again."""
    versions = []
    for dist in ("apache-airflow", "apache-airflow-core"):
        try:
            versions.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} absent")
    url = redact_url(settings.resources.airflow_database_url)
    return hashlib.sha256("\n".join([url, *versions]).encode()).hexdigest()


def write_mlflow_auth_config(settings: Settings) -> Path:
    """MLflow's basic-auth app config: the admin from configuration, users in PostgreSQL.
    Owner-only from its first byte; MLflow reads it with configparser, so each value is
    escaped for its interpolation (a "%" in a password or a percent-encoded URL)."""
    path = Path(settings.resources.environment["MLFLOW_AUTH_CONFIG_PATH"])
    auth_db = settings.mlflow_auth_database_url or f"sqlite:///{settings.mlflow_dir / 'auth.db'}"
    values = {
        "default_permission": "READ",
        "database_uri": auth_db,
        "admin_username": settings.mlflow_admin_user,
        "admin_password": str(settings.mlflow_admin_password),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": str(max(0, settings.mlflow_auth_cache_seconds)),
    }
    lines = [f"{key} = {_ini_value(key, value)}" for key, value in values.items()]
    write_private(path, "[mlflow]\n" + "\n".join(lines) + "\n")
    return path


def _ini_value(key: str, value: str) -> str:
    """`value` as configparser (interpolation on) reads it back unchanged."""
    if value != value.strip() or "\n" in value or "\r" in value:
        raise ConfigError(
            f"MLflow's auth config cannot hold {key}: it starts or ends with white space or "
            "spans lines (configparser would change it)"
        )
    return value.replace("%", "%%")


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
            [sys.executable, "-m", SUPERVISOR, svc.name, "--", *svc.argv],
            env={**service_env(settings, through_server=svc.name != "mlflow"), **svc.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=settings.home,
        )
        write_pid_file(settings, svc.name, proc.pid)
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


def started_services(settings: Settings) -> list[str]:
    """The services with a pid file: whatever `start` started, under any profile."""
    return sorted(p.stem for p in settings.run_dir.glob("*.pid"))


def stop_order(names: Iterable[str]) -> list[str]:
    """Services to stop, the reverse of `START_ORDER`; names it does not know (from another
    version of retrainer) first."""
    given = set(names)
    known = [n for n in reversed(START_ORDER) if n in given]
    return sorted(given.difference(known)) + known


def stop(settings: Settings, say: Callable[[str], None] = print, timeout: float = 30.0) -> None:
    """Stop every service `start` started for this state folder: each pid file's, whatever the
    profile then (a Celery worker started by `up --profile production` too). A stale pid file
    is removed and its pid never signalled."""
    refused: list[str] = []
    for name in stop_order(started_services(settings)):
        record = _own_record(settings, name)
        if record is None:
            continue
        try:
            _stop_one(record, name, settings.home, timeout)
        except PermissionError:
            refused.append(f"{name} (pid {record.pid})")
            continue
        pid_file(settings, name).unlink(missing_ok=True)
        say(f"{name}: stopped")
    if refused:
        raise ServiceError(
            f"not allowed to stop {', '.join(refused)}: started by another user; stop them as "
            "that user"
        )


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


def _stop_one(record: PidRecord, name: str, home: Path, timeout: float) -> None:
    """SIGTERM to the service's group; SIGKILL after `timeout` if the service, or any process
    of its group, is still there (a Celery worker's log server outlived the worker, for good)."""
    group = _group_led_by(record.pid)  # asked once: the group outlives a leader that exits
    _signal(record.pid, group, signal.SIGTERM)
    deadline = time.monotonic() + timeout

    def running() -> bool:
        return is_service_process(record, name, home) or _group_alive(group)

    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    if running():
        _signal(record.pid, group, signal.SIGKILL)


def _group_led_by(pid: int) -> int | None:
    """The process group `pid` leads (`start` gives each supervisor its own session), or None."""
    try:
        return pid if os.getpgid(pid) == pid else None
    except OSError:
        return None


def _group_alive(group: int | None) -> bool:
    """Whether any process of the group is left (its leader may be gone: the group lives on)."""
    if group is None:
        return False
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(pid: int, group: int | None, sig: int) -> None:
    """Signal the group the service's supervisor leads (`start` gives it its own session), or
    the process alone if it leads none. PermissionError is the caller's to report."""
    with contextlib.suppress(ProcessLookupError):
        if group is not None:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)


def status(settings: Settings) -> list[tuple[str, str, str]]:
    """(service, state, detail) for each service of the profile, and any other one running
    (started under the other profile)."""
    rows = []
    mine = services(settings)
    others = [n for n in started_services(settings) if n not in {s.name for s in mine}]
    for svc in [*mine, *(Service(n, []) for n in others)]:
        pid = read_pid(settings, svc.name)
        if pid is None and svc.name in others:
            continue
        if pid is None:
            rows.append((svc.name, "stopped", ""))
        elif healthy(svc.health_url):
            rows.append((svc.name, "running", f"pid {pid}"))
        else:
            rows.append((svc.name, "unhealthy", f"pid {pid}, not answering {svc.health_url}"))
    return rows
