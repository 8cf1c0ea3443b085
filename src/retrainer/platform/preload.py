"""Run an Airflow command with the task libraries already imported: `python -m
retrainer.platform.preload scheduler` (or `celery worker ...`).

Airflow 3 starts each task by forking: the LocalExecutor forks its workers from the scheduler
and each task process from a worker (a Celery worker's pool likewise forks from the worker), so
whatever the parent imported, every task process starts with. Imported there once, the libraries
each task imports (pandas, scikit-learn, MLflow, skops, GX) no longer cost every task 1-4 s of
CPU: the demo's loop has about 30 tasks. This is Celery's and gunicorn's "preload" idea.

Only third-party libraries are preloaded, nothing of retrainer's (its settings are read per task),
and nothing that starts a thread at import (a forked child gets no copy of its threads).
"""

from __future__ import annotations

import importlib
import logging
import runpy
import sys
import time
import warnings

from retrainer.config.environment import quiet_skops_lookups

# What tasks import, the heaviest first: about 4.5 s of CPU in a fresh process here.
PRELOAD = (
    "great_expectations",  # validate_data: 2.5 s
    "mlflow",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "sklearn.inspection",
    "scipy.stats",
    "pandas",
    "pyarrow.parquet",
    "skops.io",  # looks each scipy ufunc up in every loaded module: 0.5-1 s with Airflow's loaded
)

log = logging.getLogger(__name__)


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import `modules`; those that fail to import are skipped (a task would say why)."""
    loaded = []
    with warnings.catch_warnings():
        quiet_skops_lookups()
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # an optional library: the task that needs it will say
                log.warning("preload: %s not imported: %s", name, exc)
            else:
                loaded.append(name)
    return loaded


def main() -> None:
    started = time.perf_counter()
    loaded = preload()
    print(
        f"retrainer preload: {len(loaded)} libraries in {time.perf_counter() - started:.1f} s "
        f"for the tasks this process forks",
        file=sys.stderr,
    )
    # Airflow's command line, as `airflow ...` would run it (a launcher: no use of Airflow's API
    # here, which stays in retrainer.orchestration)
    sys.argv = ["airflow", *sys.argv[1:]]
    runpy.run_module("airflow", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
