"""Where an Airflow task's time goes before its work: process start and Airflow's task SDK, the DAG
file's parse, the heavy imports each step needs, and opening MLflow. Each is measured in a fresh
process (as every task is), in CPU seconds (user + system, steadier than wall time on a shared
machine), two ways in the same run:

- before: modules compiled from source at every import (no bytecode: what `uv pip install` left
  when PYTHONDONTWRITEBYTECODE is set) and MLflow opened as a SQLite store in each task;
- after: bytecode compiled at install (`make install`) and MLflow reached through its server.

    python bench/task_overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PARTS = {  # each a fresh process: python's start plus what is named
    "python alone": "pass",
    "python + import airflow.sdk (task runner)": "import airflow.sdk",
    "python + parse dags/retrain.py": "import runpy; runpy.run_path('{root}/dags/retrain.py')",
    "python + import mlflow, pandas, sklearn": "import mlflow, pandas, sklearn.ensemble",
    "python + import great_expectations": "import great_expectations",
    "python + import evidently": "import evidently",
}
OPEN_SQLITE = (
    "from mlflow.tracking import MlflowClient; c = MlflowClient('{db}', '{db}'); "
    "c.search_experiments(); c.search_registered_models()"
)
OPEN_HTTP = "from mlflow.tracking import MlflowClient; c = MlflowClient('{url}', '{url}'); c.search_experiments(); c.search_registered_models()"


def cpu_of(code: str, env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_cpu(code: str, env: dict[str, str], repeat: int, base: str = "") -> float:
    """CPU of `code` beyond what `base` (the imports it builds on) costs."""
    cost = statistics.median(cpu_of(code, env) for _ in range(repeat))
    return cost - (statistics.median(cpu_of(base, env) for _ in range(repeat)) if base else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="task-overhead-"))
    db = f"sqlite:///{tmp / 'mlflow.db'}"
    env = dict(os.environ, RETRAINER_MODELS_DIR=str(ROOT / "models"), GIT_PYTHON_REFRESH="quiet")
    before_env = dict(
        env, PYTHONPYCACHEPREFIX=str(tmp / "no-bytecode"), PYTHONDONTWRITEBYTECODE="1"
    )
    subprocess.run(
        [sys.executable, "-c", OPEN_SQLITE.format(db=db)], env=env, check=True, capture_output=True
    )
    port = 15999
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            db,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=dict(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the MLflow server did not start")
            time.sleep(0.5)
        rows = []
        for name, code in PARTS.items():
            code = code.format(root=ROOT)
            rows.append(
                (
                    name,
                    median_cpu(code, before_env, args.repeat),
                    median_cpu(code, env, args.repeat),
                )
            )
        base = "import mlflow"
        rows.append(
            (
                "open MLflow (tracking + registry), beyond import",
                median_cpu(OPEN_SQLITE.format(db=db), before_env, args.repeat, base),
                median_cpu(
                    OPEN_HTTP.format(url=f"http://127.0.0.1:{port}"), env, args.repeat, base
                ),
            )
        )
    finally:
        server.terminate()
        server.wait(timeout=20)
    print(
        f"CPU seconds per task process, median of {args.repeat} (before: no bytecode, SQLite store per task; after: bytecode, through the server)"
    )
    print(f"{'part':46} {'before':>8} {'after':>8} {'ratio':>7}")
    for name, b, a in rows:
        print(f"{name:46} {b:8.2f} {a:8.2f} {b / a if a > 0 else float('inf'):6.1f}x")


if __name__ == "__main__":
    main()
