"""monitoring.max_retrains through the monitor DAG's dag.test(): the first drift retrain is
triggered, the next one (outside the cooldown) is held by the cap with its reason; each check
records what it cost."""

import time
from pathlib import Path

import pandas as pd
import pytest

import testenv
from conftest import register_version
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_cap"
SHIFTED = Path(__file__).resolve().parents[2] / "examples" / "credit" / "traffic" / "shifted.csv"


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def log_traffic(df: pd.DataFrame, version: str) -> None:
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    rid = f"cap-{time.time_ns()}"
    records = [
        {
            **{k: (None if pd.isna(v) else v) for k, v in row.items()},
            "_request_id": rid,
            "_row": i,
            "_ts": now_iso(),
            "_model_version": version,
            "_prediction": "good",
        }
        for i, row in enumerate(df.drop(columns=["Status"]).to_dict(orient="records"))
    ]
    log = BatchedParquetLog(get_settings().inference_log_root)
    log.append(MODEL, records)
    log.close()


def monitor():
    from retrainer.orchestration.monitor import monitor_dag
    from retrainer.steps.monitor.checks import check_for_run

    dr = monitor_dag(spec()).test()
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    return dr, states, check_for_run(spec(), dr.run_id)


def drift_retrains() -> list[str]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == f"{MODEL}_retrain").all()
        for r in runs:  # finished, so the next check is not held as "in flight"
            r.state = DagRunState.SUCCESS
        return [r.run_id for r in runs if r.run_id.startswith("drift__")]


def test_the_cap_holds_the_second_drift_retrain_and_says_why(airflow_db):
    from retrainer.steps.cost import run_cost
    from retrainer.stores.tracking import mlflow_client

    champion = register_version(MODEL, f"cap-v1-{time.time_ns()}")
    shifted = pd.read_csv(SHIFTED)

    log_traffic(shifted.iloc[:400], champion)
    dr, states, check = monitor()
    assert check["decision"]["decision"] == "retrain" and check["action"] == "triggered", check
    assert drift_retrains() == [f"drift__{dr.run_id}"]

    time.sleep(1.5)  # past monitoring.cooldown (1s): only the cap can hold the next one
    log_traffic(shifted.iloc[400:800], champion)
    dr, states, check = monitor()
    assert str(dr.state) == "success", states
    assert check["decision"]["decision"] == "retrain" and check["action"] == "capped", check
    assert states["trigger_retrain"] == "skipped"
    assert "monitoring.max_retrains allows 1 per 7d" in check["action_detail"]
    assert len(drift_retrains()) == 1

    # Each check records what its tasks cost.
    cost = run_cost(mlflow_client(get_settings()), check["mlflow_run_id"])
    assert cost is not None
    assert {"read_window", "measure_drift", "evidently_report"} <= set(cost.tasks)
    assert cost.tasks["measure_drift"]["wall_s"] > 0
