"""Secrets: from the environment when configured, else generated once and kept (mode 600) in the
state folder. Never printed, never in specs or XCom."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from pathlib import Path

from retrainer.config.settings import Settings


def _private_temp(path: Path, text: str) -> str:
    """A temporary file beside ``path`` holding ``text``, created 0600 (readable by its owner
    only from the first byte; a write then chmod leaves it world-readable for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, owner-only from the first byte, replacing it at once."""
    tmp = _private_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def state_secret(settings: Settings, name: str) -> str:
    """A secret generated once and kept (mode 600) in the state folder. Two processes creating
    it at once agree on one: the first link wins, the other reads it."""
    path = settings.home / name
    if not path.exists():
        tmp = _private_temp(path, secrets.token_urlsafe(24))
        try:
            try:
                os.link(tmp, path)  # atomic, and never over an existing secret
            except FileExistsError:
                pass
            except OSError:  # a filesystem without hard links
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path.read_text().strip()


def api_token() -> str | None:
    """RETRAINER_API_TOKEN: when set, every serving endpoint but /health needs it."""
    return os.environ.get("RETRAINER_API_TOKEN") or None


def serving_admin_token(settings: Settings) -> str:
    """The token for /reload: RETRAINER_API_TOKEN if set, else one generated in the state folder."""
    return api_token() or state_secret(settings, "serving_admin_token")


def airflow_credentials(settings: Settings) -> tuple[str, str]:
    """The Airflow UI/API login: from configuration in production (RETRAINER_AIRFLOW_ADMIN_
    PASSWORD), else generated once per state folder; kept in Airflow's passwords file."""
    path = settings.airflow_passwords_file
    users: dict[str, str] = {}
    if path.exists():
        users = json.loads(path.read_text() or "{}")
    wanted = settings.airflow_admin_password
    if settings.airflow_user not in users or (wanted and users[settings.airflow_user] != wanted):
        users[settings.airflow_user] = wanted or secrets.token_urlsafe(12)
        write_private(path, json.dumps(users))
    return settings.airflow_user, users[settings.airflow_user]
