"""Five monitor runs that all decide `retrain`, started at once through the real scheduler, start
exactly one retrain. Drifted traffic keeps arriving while they run, so every check sees a
drifted window of its own; the first triggers, the others find that retrain in flight (or the
cooldown it started) and say so."""

import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from e2e_platform import running_platform

from retrainer.config.secrets import airflow_credentials
from retrainer.config.settings import RunContext, Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TRAFFIC = ROOT / "examples" / "credit" / "traffic"
MODEL = "credit_default"
RUNS = 5


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    base = tmp_path_factory.mktemp("dedup")
    raw = yaml.safe_load((ROOT / "models" / f"{MODEL}.yaml").read_text())
    raw["data"]["train"] = str(ROOT / "examples" / "credit" / "credit_data.csv")
    raw["model"]["params"]["max_iter"] = 60
    raw["monitoring"]["schedule"] = None  # only the runs this test starts
    try:
        with running_platform(base, {MODEL: raw}) as settings:
            yield settings
    finally:
        shutil.rmtree(base, ignore_errors=True)


def register_champion(settings: Settings) -> str:
    """v1, trained in this process against the platform's own MLflow store."""
    from retrainer.spec import find_spec
    from retrainer.steps import retrain

    spec = find_spec(settings.models_dir, MODEL)
    ctx = RunContext(dag_id=spec.retrain_dag_id, run_id="dedup-champion")
    validated = retrain.validate_data(spec, ctx, settings=settings)
    trained = retrain.train_candidate(spec, ctx, validated, settings)
    evaluated = retrain.evaluate_candidate(spec, ctx, trained, settings)
    registered = retrain.register_candidate(
        spec, ctx, retrain.gate_candidate(spec, ctx, evaluated, settings), settings
    )
    assert registered is not None
    return str(registered["version"])


def drifted_traffic(settings: Settings, version: str, stop: threading.Event) -> None:
    """The shifted population's rows, 300 every 2 s, as the serving API logs them."""
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    rows = pd.read_csv(TRAFFIC / "shifted.csv").drop(columns=["Status"])
    log = BatchedParquetLog(settings.inference_log_root)
    n = 0
    while not stop.is_set():
        chunk = rows.sample(300, random_state=n, replace=True)
        log.append(
            MODEL,
            [
                {
                    **{k: (None if pd.isna(v) else v) for k, v in row.items()},
                    "_request_id": f"dedup-{n}",
                    "_row": i,
                    "_ts": now_iso(),
                    "_model_version": version,
                    "_prediction": "good",
                }
                for i, row in enumerate(chunk.to_dict(orient="records"))
            ],
        )
        log.flush()
        n += 1
        stop.wait(2)
    log.close()


def test_five_monitor_runs_deciding_retrain_at_once_start_one_retrain(platform):
    from retrainer.platform.airflow_api import AirflowClient
    from retrainer.spec import find_spec
    from retrainer.steps.monitor.checks import check_for_run

    settings = platform
    version = register_champion(settings)
    spec = find_spec(settings.models_dir, MODEL)
    user, password = airflow_credentials(settings)
    api = AirflowClient(settings.airflow_url, user, password)
    api.wait_for_dag(spec.monitor_dag_id, timeout=120)
    api.wait_for_dag(spec.retrain_dag_id, timeout=120)

    stop = threading.Event()
    writer = threading.Thread(target=drifted_traffic, args=(settings, version, stop), daemon=True)
    writer.start()
    try:
        time.sleep(5)  # the first window already holds drifted rows
        started = [api.trigger(spec.monitor_dag_id, {})["dag_run_id"] for _ in range(RUNS)]
        finished = [api.wait_for_run(spec.monitor_dag_id, r, timeout=900) for r in started]
    finally:
        stop.set()
        writer.join(timeout=30)
    assert [f["state"] for f in finished] == ["success"] * RUNS

    checks = [check_for_run(spec, r, settings) for r in started]
    decisions = [c["decision"]["decision"] for c in checks]
    actions = [c["action"] for c in checks]
    print("decisions", decisions, "actions", actions)
    assert decisions == ["retrain"] * RUNS, [c["decision"].get("reasons") for c in checks]
    assert actions.count("triggered") == 1, actions
    assert set(actions) <= {"triggered", "in_flight", "cooldown"}, actions

    retrains = api.request("GET", f"/dags/{spec.retrain_dag_id}/dagRuns")["dag_runs"]
    assert [r["dag_run_id"] for r in retrains] == [
        checks[actions.index("triggered")]["retrain_run_id"]
    ]
