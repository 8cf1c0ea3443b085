"""Secrets: from the environment when configured, else generated once and kept (mode 600) in the
state folder. Never printed, never in specs or XCom."""

from __future__ import annotations

import json
import os
import secrets

from retrainer.config.settings import Settings


def state_secret(settings: Settings, name: str) -> str:
    """A secret generated once and kept (mode 600) in the state folder."""
    path = settings.home / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(users))
        path.chmod(0o600)
    return settings.airflow_user, users[settings.airflow_user]
