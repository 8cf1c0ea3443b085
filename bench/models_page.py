"""The Models page's data request with many models: p95 of GET /retrainer/api/models.

Builds 100 specs with 10 registered versions each in a fresh MLflow server (SQLite) with the
decision summaries the steps leave (gate, monitor with a PSI per feature, ledger), then asks
Airflow's own api-server app (in-process, the plugin mounted, a logged-in user) for the page's
data: cold (no cache: every request reads MLflow) and warm (the plugin's short cache).
Target: p95 under 1 s.

    python bench/models_page.py [--models 100] [--versions 10] [--requests 30]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(round(0.95 * len(values))) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="retrainer-bench-page-"))
    models_dir = tmp / "models"
    models_dir.mkdir()
    base = yaml.safe_load((ROOT / "models" / "breast_cancer.yaml").read_text())
    names = [f"model_{i:03d}" for i in range(args.models)]
    for name in names:
        (models_dir / f"{name}.yaml").write_text(yaml.safe_dump(base | {"name": name}))

    from retrainer.config.environment import process_environment
    from retrainer.config.settings import Settings

    port = free_port()
    settings = Settings(
        home=tmp / "state",
        models_dir=models_dir,
        mlflow_port=port,
        mlflow_tracking_uri=f"http://127.0.0.1:{port}",
    )
    os.environ.update(process_environment(settings))
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from retrainer.platform import services

    store = f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    print(f"state in {tmp}; migrating Airflow's database and starting MLflow on port {port}...")
    services.init_state(settings, say=lambda s: None)
    from dataclasses import replace

    populate(replace(settings, mlflow_tracking_uri=store), names, args.versions)  # direct: faster
    env = services.service_env(settings)
    mlflow = subprocess.Popen(
        [
            str(services.venv_bin() / "mlflow"),
            "server",
            "--backend-store-uri",
            store,
            "--default-artifact-root",
            (settings.mlflow_dir / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not services.healthy(f"http://127.0.0.1:{port}/health"):
            if time.monotonic() > deadline or mlflow.poll() is not None:
                sys.exit("MLflow did not start")
            time.sleep(0.5)
        measure(settings, names, args.requests)
    finally:
        mlflow.terminate()
        mlflow.wait(timeout=30)


def populate(settings, names: list[str], versions: int) -> None:
    from retrainer.stores import overview
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(settings)
    started = time.perf_counter()
    features = [f"feature_{j:02d}" for j in range(30)]
    now = int(time.time() * 1000)
    for n, name in enumerate(names):
        client.create_registered_model(name, tags={"managed_by": "retrainer"})
        for v in range(1, versions + 1):
            client.create_model_version(
                name,
                f"s3://bench/models/{name}/{v}",
                tags={"retrainer.gate.decision": "passed", "metric.roc_auc": f"0.9{v}"},
                description=f"v{v} of {name}",
            )
        client.set_registered_model_alias(name, "champion", str(versions))
        client.set_registered_model_alias(name, "previous", str(versions - 1))
        client.set_registered_model_alias(name, "challenger", str(versions))
        ref = {
            "dag_id": f"{name}_retrain",
            "dag_run_id": f"manual__{n}",
            "mlflow_run_id": "0" * 32,
            "experiment_id": "1",
            "time": now,
        }
        gate = {
            "decision": "passed",
            "reasons": ["roc_auc 0.95 >= 0.9"],
            "primary_metric": "roc_auc",
            "candidate_metrics": {"roc_auc": 0.95},
            "champion_metrics": {"roc_auc": 0.94},
            "champion_version": str(versions - 1),
        }
        overview.write_summary(
            client, name, overview.SUMMARY_GATE, overview.gate_summary(gate, ref)
        )
        monitor = {
            "decision": "warn",
            "reasons": ["PSI feature_00 0.12 >= 0.1"],
            "features": ["feature_00"],
            "psi": {f: 0.01 * (j + 1) for j, f in enumerate(features)},
            "max_psi": 0.3,
            "rows": 5000,
            "psi_warn": 0.1,
            "psi_retrain": 0.25,
            "champion_version": str(versions),
        }
        overview.write_summary(
            client,
            name,
            overview.SUMMARY_MONITOR,
            overview.monitor_summary(monitor, ref | {"dag_id": f"{name}_monitor"}),
        )
        ledger = [
            {
                "action": "promote",
                "from": str(v - 1),
                "to": str(v),
                "by": "retrain",
                "reason": "passed the gate",
                "dag_id": f"{name}_deploy",
                "dag_run_id": f"deploy__{v}",
                "time": now,
            }
            for v in range(versions, versions - 5, -1)
        ]
        overview.write_summary_list(client, name, overview.SUMMARY_LEDGER, ledger)
    print(
        f"populated {len(names)} models x {versions} versions in {time.perf_counter() - started:.0f} s"
    )


def measure(settings, names: list[str], requests: int) -> None:
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    from retrainer.config.secrets import airflow_credentials
    from retrainer.orchestration.plugin import data

    client = TestClient(create_app("core"))
    user, password = airflow_credentials(settings)
    token = client.post("/auth/token", json={"username": user, "password": password}).json()
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    results = {}
    from retrainer.stores.overview import read_overview
    from retrainer.stores.tracking import mlflow_client

    reads = []
    for _ in range(5):
        t = time.perf_counter()
        read_overview(mlflow_client(settings), names)
        reads.append(time.perf_counter() - t)
    print(
        f"read_overview alone (2 MLflow calls through the server): median {statistics.median(reads) * 1000:.0f} ms"
    )
    for label, ttl in (
        ("cold (no cache: reads MLflow)", "0"),
        ("cached (10 s, refreshed behind)", "10"),
        ("cached (1 s, refreshed behind)", "1"),
    ):
        os.environ[data.CACHE_SECONDS_ENV] = ttl
        data.clear_cache()
        times = []
        for _ in range(requests):
            if ttl == "1":
                time.sleep(0.3)  # let the cache go stale every few requests
            t = time.perf_counter()
            resp = client.get("/retrainer/api/models", headers=auth)
            times.append(time.perf_counter() - t)
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert len(body["models"]) == len(names), len(body["models"])
        results[label] = times
        size = len(resp.content)
    print(
        f"\nGET /retrainer/api/models, {len(names)} models, {requests} requests each, {size / 1024:.0f} KB answer"
    )
    print(f"{'':<36} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    worst = 0.0
    for label, times in results.items():
        worst = max(worst, p95(times))
        print(
            f"{label:<36} {statistics.median(times) * 1000:>8.0f} {p95(times) * 1000:>8.0f} {max(times) * 1000:>8.0f}"
        )
    print(
        f"\ntarget: p95 < 1000 ms; cold p95 {p95(next(iter(results.values()))) * 1000:.0f} ms -> {'OK' if worst < 1 else 'OVER'}"
    )


if __name__ == "__main__":
    main()
