"""docker-compose.yml for real: every service healthy, the whole loop inside the containers on
the Celery worker, logs through the api-server, Prometheus and the dashboards, 401s for
anonymous requests, state kept by `down` + `up`, nothing left by `down -v`.

The tests run in file order and share one stack (conftest.py); each step needs the ones before.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
from compose_stack import IMAGE, PROJECT, ROOT, TIMINGS, Stack, _run
from statsd_mapping import load_rules, map_line

from retrainer.constants import LEDGER_EXPERIMENT
from retrainer.platform.airflow_api import AirflowClient

MODEL = "credit_default"
DASHBOARD = json.loads((ROOT / "infra/grafana/dashboards/retrainer.json").read_text())
STATE: dict[str, Any] = {}


def airflow(stack: Stack) -> AirflowClient:
    return AirflowClient(
        stack.url("airflow"), stack.env["AIRFLOW_ADMIN_USER"], stack.env["AIRFLOW_ADMIN_PASSWORD"]
    )


def mlflow_get(stack: Stack, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack.url('mlflow')}{path}",
        params=params,
        auth=(stack.env["MLFLOW_ADMIN_USER"], stack.env["MLFLOW_ADMIN_PASSWORD"]),
        timeout=30,
    )


def serving_version(stack: Stack) -> str | None:
    resp = httpx.get(
        f"{stack.url('serving')}/models/{MODEL}",
        headers={"Authorization": f"Bearer {stack.env['RETRAINER_API_TOKEN']}"},
        timeout=30,
    )
    return str(resp.json().get("version")) if resp.status_code == 200 else None


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"].replace("$model", ".*")))
    return out


def test_the_image_is_what_it_should_be(stack: Stack) -> None:
    def in_image(*argv: str) -> str:
        proc = _run(["docker", "run", "--rm", "--entrypoint", argv[0], IMAGE, *argv[1:]])
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    assert in_image("id", "-u").strip() == "50000"
    assert in_image("id", "-g").strip() == "0"
    assert "No broken requirements" in in_image("pip", "check")
    installed = {
        line.split("==")[0].lower()
        for line in in_image("pip", "list", "--format=freeze").splitlines()
    }
    assert not installed & {"pytest", "moto", "ruff", "mypy"}, "dev tools in the image"
    assert {"apache-airflow", "mlflow", "retrainer", "apache-airflow-providers-celery"} <= installed
    # RETRAINER_HOME is the airflow user's to create things in (was root's, mode 755).
    in_image(
        "sh", "-c", "mkdir -p /opt/retrainer/state/probe && touch /opt/retrainer/state/probe/x"
    )


def test_every_service_is_healthy(stack: Stack) -> None:
    states = stack.wait_healthy(timeout=60)
    expected = {
        "postgres", "redis", "minio", "airflow-init", "airflow-apiserver", "airflow-scheduler",
        "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "mlflow", "serving",
        "statsd-exporter", "prometheus",
    }  # fmt: skip
    assert set(states) == expected, states
    # MLflow answers the other containers by the name they use (Host: mlflow:5000): was 403.
    code = stack.compose(
        "exec", "-T", "serving", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
        "-u", f"{stack.env['MLFLOW_ADMIN_USER']}:{stack.env['MLFLOW_ADMIN_PASSWORD']}",
        "http://mlflow:5000/api/2.0/mlflow/experiments/search?max_results=1",
    ).stdout.strip()  # fmt: skip
    assert code == "200", f"MLflow answered {code} to Host mlflow:5000"


def test_anonymous_requests_are_refused(stack: Stack) -> None:
    checks = {
        "Airflow REST API": httpx.get(f"{stack.url('airflow')}/api/v2/dags", timeout=30),
        "MLflow": httpx.get(f"{stack.url('mlflow')}/api/2.0/mlflow/experiments/search", timeout=30),
        "serving predict": httpx.post(
            f"{stack.url('serving')}/models/{MODEL}/predict", json={"rows": [{}]}, timeout=30
        ),
        "serving metrics": httpx.get(f"{stack.url('serving')}/metrics", timeout=30),
    }
    codes = {name: resp.status_code for name, resp in checks.items()}
    assert set(codes.values()) == {401}, codes


def test_the_loop_runs_inside_the_containers(stack: Stack) -> None:
    started = time.monotonic()
    proc = stack.compose(
        "exec", "-T", "airflow-apiserver", "retrainer", "demo", timeout=3000, check=False
    )
    TIMINGS["the loop (retrainer demo in the api-server container)"] = time.monotonic() - started
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, (
        f"retrainer demo failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"
    )
    assert "retrain triggered by drift" in proc.stdout
    assert serving_version(stack) == "2"

    client = airflow(stack)
    runs = client.request(
        "GET", f"/dags/{MODEL}_retrain/dagRuns", params={"order_by": "start_date"}
    )["dag_runs"]
    assert len(runs) == 2 and {r["state"] for r in runs} == {"success"}, runs
    assert runs[-1]["conf"].get("reason", "").startswith("drift") or "psi" in json.dumps(
        runs[-1]["conf"]
    )
    worker = stack.containers()["airflow-worker"]
    worker_host = _run(["docker", "inspect", "-f", "{{.Config.Hostname}}", worker]).stdout.strip()
    hosts = {
        ti["hostname"]
        for run in runs
        for ti in client.task_instances(f"{MODEL}_retrain", run["dag_run_id"])
        if ti["state"] == "success"
    }
    assert hosts == {worker_host}, f"tasks ran on {hosts}, not on the Celery worker {worker_host}"
    # Links point where a browser reaches the UIs, never at the bind address 0.0.0.0.
    ledger = httpx.post(
        f"{stack.url('mlflow')}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [
                mlflow_get(
                    stack,
                    "/api/2.0/mlflow/experiments/get-by-name",
                    experiment_name=LEDGER_EXPERIMENT,
                ).json()["experiment"]["experiment_id"]
            ],
            "max_results": 10,
        },
        auth=(stack.env["MLFLOW_ADMIN_USER"], stack.env["MLFLOW_ADMIN_PASSWORD"]),
        timeout=30,
    ).json()["runs"]
    urls = [
        t["value"] for r in ledger for t in r["data"]["tags"] if t["key"] == "ledger.dag_run_url"
    ]
    assert urls and all(u.startswith(stack.env["AIRFLOW_PUBLIC_URL"] + "/dags/") for u in urls), (
        urls
    )
    STATE["run"] = runs[-1]["dag_run_id"]


def task_log(stack: Stack, run_id: str, task: str = "train_candidate") -> list[dict[str, Any]]:
    """The log of the task's last try (a transient error may have been retried)."""
    client = airflow(stack)
    ti = next(t for t in client.task_instances(f"{MODEL}_retrain", run_id) if t["task_id"] == task)
    resp = httpx.get(
        f"{client.base_url}/api/v2/dags/{MODEL}_retrain/dagRuns/{run_id}/taskInstances/{task}/logs/{ti['try_number']}",
        params={"full_content": "true"},
        headers={**client._headers(), "Accept": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text[:2000]
    content = resp.json()["content"]
    assert isinstance(content, list), content
    return content


def test_task_logs_are_read_through_the_api_server(stack: Stack) -> None:
    lines = task_log(stack, STATE["run"])
    text = json.dumps(lines)
    # Read from the one shared AIRFLOW_HOME (the worker wrote it), not refused.
    assert "/opt/retrainer/state/airflow/logs/dag_id=" in text, text[:2000]
    assert "Could not read served logs" not in text and "Forbidden" not in text, text[:2000]
    events = [line for line in lines if line.get("task_id") == "train_candidate"]
    assert events and any(line.get("event") == "Pushing xcom" for line in events), text[-2000:]
    STATE["log"] = lines


def prometheus(stack: Stack, query: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{stack.url('prometheus')}/api/v1/query", params={"query": query}, timeout=30)
    body = resp.json()
    assert body.get("status") == "success", f"{query}: {body}"
    return body["data"]["result"]


def test_prometheus_scrapes_serving_and_every_dashboard_query_has_data(stack: Stack) -> None:
    # A little live traffic so the 5-minute rates are fresh.
    rows = [{"Seniority": 9, "Home": "rent", "Time": 60, "Age": 30, "Marital": "married",
             "Records": "no", "Job": "freelance", "Expenses": 73, "Income": 129,
             "Assets": 0, "Debt": 0, "Amount": 800, "Price": 846}]  # fmt: skip
    for _ in range(20):
        httpx.post(
            f"{stack.url('serving')}/models/{MODEL}/predict",
            json={"rows": rows},
            headers={"Authorization": f"Bearer {stack.env['RETRAINER_API_TOKEN']}"},
            timeout=30,
        )
    queries = [(t, q) for t, q in dashboard_queries() if "airflow_" not in q]
    deadline = time.monotonic() + 180
    empty: list[str] = []
    while time.monotonic() < deadline:
        up = prometheus(stack, 'up{job="retrainer-serving"}')
        empty = [f"{t}: {q}" for t, q in queries if not prometheus(stack, q)]
        if up and up[0]["value"][1] == "1" and not empty:
            break
        time.sleep(10)
    assert up and up[0]["value"][1] == "1", f"serving target not up: {up}"
    assert not empty, f"dashboard queries without data: {empty}"
    retrains = prometheus(
        stack, f'sum(increase(retrainer_retrains_triggered_total{{model="{MODEL}"}}[1d]))'
    )
    assert float(retrains[0]["value"][1]) >= 0.9, retrains  # one drift-triggered retrain, counted
    # The alert rules are loaded and evaluated (infra/prometheus/alerts.yml, mounted).
    rules = httpx.get(f"{stack.url('prometheus')}/api/v1/rules", timeout=30).json()
    groups = {g["name"]: g for g in rules["data"]["groups"]}
    assert {"retrainer-serving", "retrainer-drift"} <= set(groups), sorted(groups)
    assert all(r.get("health") == "ok" for g in groups.values() for r in g["rules"]), groups


def test_airflow_panels_name_metrics_that_airflow_sends(stack: Stack) -> None:
    logs = stack.compose("logs", "--no-color", "statsd-exporter").stdout
    lines = [m.group(1) for m in re.finditer(r"STATSD (\S+)", logs)]
    assert lines, "no StatsD line arrived from Airflow"
    rules = load_rules(ROOT / "infra/prometheus/statsd-mapping.yml")
    samples = [s for s in (map_line(line, rules) for line in lines) if s is not None]
    names = {s.name for s in samples}
    finished = {dict(s.labels).get("state") for s in samples if s.name == "airflow_ti_finish_total"}
    assert "success" in finished, sorted(names)[:50]
    dags = {dict(s.labels).get("dag_id") for s in samples if s.name == "airflow_ti_finish_total"}
    assert f"{MODEL}_retrain" in dags, dags
    for title, query in dashboard_queries():
        for metric in set(re.findall(r"\b(airflow_[a-z0-9_]+)", query)):
            assert metric in names, f"panel {title!r} names {metric}; Airflow sends {sorted(names)}"


def test_models_runs_and_logs_survive_down_and_up(stack: Stack) -> None:
    def snapshot() -> dict[str, Any]:
        versions = mlflow_get(
            stack, "/api/2.0/mlflow/model-versions/search", filter=f"name='{MODEL}'"
        ).json()["model_versions"]
        experiments = mlflow_get(
            stack, "/api/2.0/mlflow/experiments/search", max_results=100
        ).json()
        ids = [e["experiment_id"] for e in experiments["experiments"]]
        runs = httpx.post(
            f"{stack.url('mlflow')}/api/2.0/mlflow/runs/search",
            json={"experiment_ids": ids, "max_results": 1000},
            auth=(stack.env["MLFLOW_ADMIN_USER"], stack.env["MLFLOW_ADMIN_PASSWORD"]),
            timeout=30,
        ).json()["runs"]
        return {
            "versions": sorted(v["version"] for v in versions),
            "runs": {r["info"]["run_id"] for r in runs},
        }

    before = snapshot()
    assert before["versions"] == ["1", "2"]
    stack.compose("down")
    assert not stack.containers()
    stack.compose("up", "-d", "--no-build")
    stack.wait_healthy()
    after = snapshot()
    assert after["versions"] == before["versions"]
    assert before["runs"] <= after["runs"], "MLflow runs lost"  # (scheduled checks may add some)
    assert serving_version(stack) == "2"  # loaded again from MLflow, its files from S3
    ours = [line for line in task_log(stack, STATE["run"]) if line.get("task_id")]
    assert ours == [line for line in STATE["log"] if line.get("task_id")]


def test_down_v_leaves_nothing(stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans")
    label = f"label=com.docker.compose.project={PROJECT}"
    left = {
        kind: _run(["docker", kind, "ls", "-q", "--filter", label]).stdout.split()
        for kind in ("volume", "network")
    }
    left["container"] = _run(["docker", "ps", "-aq", "--filter", label]).stdout.split()
    assert not any(left.values()), left
