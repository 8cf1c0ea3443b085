"""The processes that fork Airflow's task processes import the task libraries first."""

from __future__ import annotations

import os
import subprocess
import sys

from retrainer.config.environment import THREAD_VARIABLES, process_environment
from retrainer.config.settings import Settings
from retrainer.platform import preload, services


def test_the_scheduler_starts_through_preload_and_tasks_get_thread_limits(tmp_path):
    s = Settings(home=tmp_path, threads=1)
    argv = {svc.name: svc.argv for svc in services.services(s)}
    assert argv["airflow-scheduler"][1:] == ["-m", "retrainer.platform.preload", "scheduler"]
    assert argv["airflow-dag-processor"][-1] == "dag-processor"  # parses only: no preload
    # `retrainer airflow ...` (the containers' and Helm's commands) takes the same route
    assert services.airflow_argv(["celery", "worker"])[1:3] == ["-m", "retrainer.platform.preload"]
    assert services.airflow_argv(["celery", "flower"])[0].endswith("/airflow")
    assert services.airflow_argv(["triggerer"])[0].endswith("/airflow")
    env = process_environment(s)
    assert all(env[v] == "1" for v in THREAD_VARIABLES)
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.25"


def test_a_library_that_fails_to_import_is_skipped():
    assert preload.preload(("json", "retrainer_no_such_library")) == ["json"]


def test_preload_runs_the_airflow_command_with_the_libraries_loaded():
    """`python -m retrainer.platform.preload <airflow command>`: Airflow's CLI, after the imports,
    with no thread started (a forked task process would get none of them)."""
    code = (
        "import sys, threading\n"
        "from retrainer.platform import preload\n"
        "loaded = preload.preload()\n"
        "assert loaded == list(preload.PRELOAD), loaded\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "sys.argv = ['preload', 'version']\n"
        "preload.main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"retrainer preload: {len(preload.PRELOAD)} libraries" in out.stderr
    assert out.stdout.strip().split(".")[0] == "3"  # airflow version
