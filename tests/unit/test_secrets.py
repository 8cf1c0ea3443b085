"""Secrets kept in the state folder: owner-only from their first byte, one value however many
processes create them at once."""

import contextlib
import os
import stat
import threading

from retrainer.config import secrets
from retrainer.config.settings import get_settings


def test_the_admin_token_is_never_readable_by_others_and_created_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("RETRAINER_API_TOKEN", raising=False)
    settings = get_settings()
    seen: list[str] = []
    modes: list[int] = []
    path = settings.home / "serving_admin_token"
    stop = threading.Event()

    def watch() -> None:  # the mode of the file whenever it exists, while others create it
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):
                modes.append(stat.S_IMODE(os.stat(path).st_mode))

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [
        threading.Thread(target=lambda: seen.append(secrets.serving_admin_token(settings)))
        for _ in range(16)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert len(set(seen)) == 1 and len(seen) == 16
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert set(modes) <= {0o600}
    assert [p.name for p in settings.home.iterdir() if p.name.startswith(".")] == []


def test_the_airflow_passwords_file_is_owner_only(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    settings = get_settings()
    user, password = secrets.airflow_credentials(settings)
    assert password and user
    mode = stat.S_IMODE(os.stat(settings.airflow_passwords_file).st_mode)
    assert mode == 0o600
    assert secrets.airflow_credentials(settings) == (user, password)
