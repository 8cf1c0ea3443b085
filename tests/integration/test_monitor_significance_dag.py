"""The monitor's significance rule through dag.test(): a PSI past the limit retrains only when
the bucket counts differ significantly (BH across features); noise past the limit only warns.
The decision records (monitor and gate) as logged validate against their published schemas."""

import json
import time
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import jsonschema
import pandas as pd
import pytest

import testenv
from conftest import log_served, register_version
from retrainer import constants as C
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_sig"
TRAFFIC = Path(__file__).resolve().parents[2] / "examples" / "credit" / "traffic"


def schema(name: str) -> dict:
    text = resources.files("retrainer.core").joinpath(f"schemas/{name}.schema.json").read_text()
    return json.loads(text)


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def artifact(run_id: str, path: str) -> dict:
    from retrainer.stores.tracking import mlflow_client

    local = mlflow_client(get_settings()).download_artifacts(run_id, path)
    return json.loads(Path(local).read_text())


def log_traffic(df: pd.DataFrame, version: str) -> None:
    rows = df.drop(columns=["Status"]).to_dict(orient="records")
    log_served(MODEL, version, rows, ["good"] * len(rows), prefix="sig")


def monitor():
    from retrainer.orchestration.monitor import monitor_dag
    from retrainer.steps.monitor.checks import check_for_run

    dr = monitor_dag(spec()).test(run_conf={"ignore_cooldown": True})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", states
    return dr, states, check_for_run(spec(), dr.run_id)


def retrain_runs() -> list[str]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == f"{MODEL}_retrain").all()
        return [r.run_id for r in runs]


def test_large_drift_retrains_only_when_significant(airflow_db):
    version = register_version(MODEL, f"sig-v1-{time.time_ns()}")
    limit = spec().monitoring.psi_retrain

    # Traffic from the training population: some PSI passes the (low) limit from sampling
    # noise alone. PSI-only would retrain; the significance rule only warns.
    log_traffic(pd.read_csv(TRAFFIC / "base.csv"), version)
    dr, states, check = monitor()
    d = check["decision"]
    large = [f for f, v in d["psi"].items() if v is not None and v >= limit]
    assert large, d["psi"]  # the setting is real: a PSI-only trigger would fire here
    assert d["decision"] == "warn" and d["drifted"] == [], d["reasons"]
    sig = d["significance"]["features"]
    for name in large:
        assert sig[name]["large"] and not sig[name]["significant"], sig[name]
        assert sig[name]["p_adjusted"] > d["significance"]["fdr"]
    assert any("not significant" in r or "noise" in r for r in d["reasons"]), d["reasons"]
    assert states["trigger_retrain"] == "skipped" and retrain_runs() == []

    # The demo's shifted population: large AND significant, so a retrain is triggered.
    log_traffic(pd.read_csv(TRAFFIC / "shifted.csv").iloc[:300], version)
    dr, states, check = monitor()
    d = check["decision"]
    assert d["decision"] == "retrain" and "Age" in d["drifted"], d["reasons"]
    age = d["significance"]["features"]["Age"]
    assert age["large"] and age["significant"] and age["p_adjusted"] <= d["significance"]["fdr"]
    assert states["trigger_retrain"] == "success" and check["action"] == "triggered"
    assert retrain_runs() == [f"drift__{dr.run_id}"]

    # The record as logged: the published schema, and links to where it was decided.
    record = artifact(check["mlflow_run_id"], C.ARTIFACT_MONITOR_DECISION)
    jsonschema.validate(record, schema("monitor_decision"))
    links = record["links"]
    assert links["airflow_run"].endswith(f"/dags/{MODEL}_monitor/runs/{quote(dr.run_id, safe='')}")
    assert f"/runs/{check['mlflow_run_id']}" in links["mlflow_run"]
    assert f"/#/models/{MODEL}/versions/{version}" in links["model_version"]
    # ... and what the automation did about it, and why, in the same document.
    done = record["automation"]
    assert done["action"] == "triggered" and done["retrain_run_id"] == f"drift__{dr.run_id}"
    retrain_page = f"/dags/{MODEL}_retrain/runs/{quote(done['retrain_run_id'], safe='')}"
    assert done["retrain_run"].endswith(retrain_page) and done["detail"], done


def test_the_gate_record_as_logged_follows_its_schema(airflow_db):
    from retrainer.stores.registry import version_by_alias
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(get_settings())
    champion = version_by_alias(client, MODEL, C.ALIAS_CHAMPION)
    record = artifact(str(champion.run_id), C.ARTIFACT_GATE_JSON)
    jsonschema.validate(record, schema("gate_decision"))
    assert (
        record["links"]["candidate_version"]
        .split("?")[0]
        .endswith(f"/#/models/{MODEL}/versions/{champion.version}")
    )
    assert f"/runs/{champion.run_id}" in record["links"]["mlflow_run"]
