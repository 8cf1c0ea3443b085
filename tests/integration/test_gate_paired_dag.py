"""The paired gate through Airflow's dag.test(): retraining on unchanged data, both rules."""

import json
from pathlib import Path

import pytest

from retrainer import constants as C
from retrainer.config.settings import get_settings
from retrainer.spec import load_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def spec_with_gate(**gate):
    spec = load_spec(get_settings().models_dir / "credit_gate.yaml")
    return spec.model_copy(update={"gate": spec.gate.model_copy(update=gate)})


def run_dag(spec):
    from retrainer.orchestration.retrain import retrain_dag

    dr = retrain_dag(spec, ROOT / "models" / "credit_default.yaml").test(run_conf={})
    return dr, {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def gate_record(spec, dr):
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(get_settings())
    exp = client.get_experiment_by_name(spec.experiment_name).experiment_id
    run = client.search_runs([exp], filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{dr.run_id}'")[0]
    with open(client.download_artifacts(run.info.run_id, C.ARTIFACT_GATE_JSON)) as fh:
        return run, json.load(fh)


def test_unchanged_data_passes_non_inferiority_and_fails_superiority(airflow_db):
    first, states = run_dag(spec_with_gate())
    assert states["register_candidate"] == "success", states  # the first champion

    sup = spec_with_gate(comparison="superiority")
    dr, states = run_dag(sup)
    assert str(dr.state) == "success" and states["register_candidate"] == "skipped", states
    run, record = gate_record(sup, dr)
    assert record["decision"] == "rejected" and record["extra"]["rule"] == "superiority"
    auc = record["extra"]["comparison"]["metrics"]["roc_auc"]
    assert auc["improvement"] == 0 and auc["method"] == "delong" and not auc["passed"]
    assert "superiority, margin 0" in run.data.tags[C.TAG_GATE_REASONS]
    assert run.data.metrics["improvement_p_value_roc_auc"] == pytest.approx(0.5)

    ni = spec_with_gate()  # the default: non-inferiority, margin 0.01
    dr, states = run_dag(ni)
    assert states["register_candidate"] == "success", states
    run, record = gate_record(ni, dr)
    assert record["decision"] == "passed" and record["extra"]["rule"] == "non_inferiority"
    assert record["checks"][0]["lower"] is not None
    assert "non_inferiority, margin 0.01" in run.data.tags[C.TAG_GATE_REASONS]
