"""The variables every process of the platform gets (Airflow's parts, tasks, MLflow, serving), so
that each resolves the same settings: `RETRAINER_*`, `AIRFLOW__*`, MLflow's, and thread limits."""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from retrainer.config.settings import PROJECT_ROOT, Settings


def process_environment(settings: Settings) -> dict[str, str]:
    """The variables that point Airflow, MLflow and retrainer at this state folder."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        path = venv_bin + os.pathsep + path
    # Every setting, so each process (serving, every task) resolves the same ones.
    own = {
        f"RETRAINER_{f.name.upper()}": str(getattr(settings, f.name))
        for f in fields(settings)
        if getattr(settings, f.name) is not None and f.name != "dags_dir"
    }
    return {
        **own,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        **settings.resources.environment,
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            filter(None, [f"{settings.airflow_user}:admin", settings.airflow_users])
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.airflow_passwords_file),
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__BASE_URL": settings.airflow_ui_url,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "30",
        "PATH": path,
        # The whole task process, not only the fit: out-of-fold fits, permutation importance and
        # predictions ran on every core. With two OpenMP threads on two cores, one of them
        # busy with any other process (even at nice 19), a HistGradientBoosting fit on the
        # demo's data took 26 s instead of 0.3 s (each parallel region waits for the
        # descheduled thread), and the demo's train_candidate 105-112 s instead of 8.
        **thread_limits(settings.task_threads),
        **lineage_environment(settings),
    }


def lineage_environment(settings: Settings) -> dict[str, str]:
    """Airflow's OpenLineage provider: retrainer's extractor names each task's datasets; events
    go to `settings.lineage_transport` (the provider's transport JSON, e.g. {"type": "http",
    "url": ...} or {"type": "file", "log_file_path": ...}); none configured: no events."""
    env = {
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": "retrainer.orchestration.lineage.RetrainerExtractor",
        "AIRFLOW__OPENLINEAGE__NAMESPACE": settings.lineage_namespace,
    }
    if settings.lineage_transport:
        env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = settings.lineage_transport
    return env


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_limits(threads: int) -> dict[str, str]:
    """OpenMP and BLAS start a thread per core unless told: on a shared worker, every task then
    oversubscribes the cores (a HistGradientBoosting fit took 31-45 s instead of 7-9 s here).
    Every process `retrainer up` starts gets `Settings.task_threads` (RETRAINER_THREADS; by
    default the cores / RETRAINER_TASK_SLOTS)."""
    return dict.fromkeys(THREAD_VARIABLES, str(threads))


def quiet_skops_lookups() -> None:
    """Silence the warnings skops' import sets off beside Airflow (in a task: once per process).

    `import skops.io` looks each scipy ufunc up in every loaded module; beside Airflow those
    include Airflow 3's deprecated-module shims, which warn on every attribute read: 1,160
    warning lines in the log of each task that loads or saves a model (train, evaluate, smoke
    test, drift check). Only the warnings raised from inside skops are dropped. (The lookups
    themselves cost 0.5-1 s of CPU; preloaded here, tasks skip them.)
    """
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"skops\.")
