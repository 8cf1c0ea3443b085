"""The label-free estimate through dag.test(): scored traffic inside the training rows' support
gives a trusted estimate that (with a lenient max_estimated_drop) holds a drift retrain back;
the demo's shifted traffic lies outside it, so the estimate is reported as not trusted and the
drift retrain goes ahead. Real registry, real champion, real inference-log writer."""

import json
import time
from importlib import resources
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

import testenv
from conftest import log_served, register_version
from retrainer import constants as C
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_est"
CREDIT = Path(__file__).resolve().parents[2] / "examples" / "credit"


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def log_scored(df: pd.DataFrame, version: str) -> None:
    """Rows into the inference log with the champion's own prediction and score, as served."""
    from retrainer.serving.model import load_version

    handle = load_version(MODEL, version, get_settings().tracking_uri)
    rows = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in df[handle.column_names].to_dict(orient="records")
    ]
    labels, probs = handle.predict(rows)
    assert probs is not None
    scores = [p[str(label)] for label, p in zip(labels, probs, strict=True)]
    log_served(MODEL, version, rows, labels, scores, prefix="est")


def monitor():
    from retrainer.orchestration.monitor import monitor_dag
    from retrainer.steps.monitor.checks import check_for_run

    dr = monitor_dag(spec()).test(run_conf={"ignore_cooldown": True})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", states
    return states, check_for_run(spec(), dr.run_id)


def test_an_estimate_outside_the_training_support_does_not_hold_a_drift_retrain(airflow_db):
    from retrainer.stores.tracking import mlflow_client

    version = register_version(MODEL, f"est-v1-{time.time_ns()}")
    full = pd.read_csv(CREDIT / "credit_data.csv")
    base = full[~((full["Age"] >= 40) & (full["Amount"] >= 1000))]

    # Inside the support, yet drifted: applicants under 30 only (Age's PSI far past the limit).
    # The estimate is trusted and its drop is under 0.5, so it holds the retrain back.
    log_scored(base[base["Age"] < 30].iloc[:300], version)
    states, check = monitor()
    d = check["decision"]
    est = d["estimate"]
    assert est["support"]["within"] and est["support"]["outside_share"] < 0.1, est
    assert d["decision"] == "warn" and "Age" in d["drifted"], d["reasons"]
    assert "label-free estimate of roc_auc" in d["reasons"][-1]
    assert states["trigger_retrain"] == "skipped"

    # The demo's shifted traffic: a third of its rows lie where no training row was. The
    # estimate is still reported, but not trusted: drift decides, and the retrain is triggered.
    log_scored(pd.read_csv(CREDIT / "traffic" / "shifted.csv").iloc[:300], version)
    states, check = monitor()
    d = check["decision"]
    est = d["estimate"]
    assert not est["support"]["within"] and est["support"]["outside_share"] >= 0.2, est
    assert est["drop"] < 0.5  # alone, the estimate would have held this retrain back
    assert d["decision"] == "retrain" and "not trusted" in d["reasons"][-1], d["reasons"]
    assert states["trigger_retrain"] == "success" and check["action"] == "triggered"
    run = mlflow_client(get_settings()).get_run(check["mlflow_run_id"])
    assert "estimated.roc_auc" in run.data.metrics
    local = mlflow_client(get_settings()).download_artifacts(
        check["mlflow_run_id"], C.ARTIFACT_MONITOR_DECISION
    )
    record = json.loads(Path(local).read_text())
    schema = resources.files("retrainer.core").joinpath("schemas/monitor_decision.schema.json")
    jsonschema.validate(record, json.loads(schema.read_text()))
    assert record["estimate"]["support"] == est["support"]
