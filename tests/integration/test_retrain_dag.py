"""The retrain DAG through Airflow's dag.test(): real tasks, real MLflow registry, real GX."""

from pathlib import Path

import pandas as pd
import pytest

from retrainer import constants as C
from retrainer.config.settings import RunContext, get_settings
from retrainer.spec import load_spec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CREDIT = ROOT / "examples" / "credit" / "credit_data.csv"


def spec_named(name: str, **model):
    spec = load_spec(get_settings().models_dir / f"{name}.yaml")
    if model:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update=model)})
    return spec


def run_dag(spec, conf=None):
    from retrainer.orchestration.retrain import retrain_dag

    dag = retrain_dag(spec, ROOT / "models" / "credit_default.yaml")
    dr = dag.test(run_conf=conf or {})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    return dr, states


def client():
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client(get_settings())


def versions(name):
    return sorted(int(v.version) for v in client().search_model_versions(f"name = '{name}'"))


def alias(name, a):
    from retrainer.stores.registry import version_by_alias

    mv = version_by_alias(client(), name, a)
    return None if mv is None else int(mv.version)


@pytest.fixture(scope="module")
def first_run(airflow_db):
    spec = spec_named("credit_it")
    dr, states = run_dag(spec, {"reason": "integration test"})
    return spec, dr, states


def test_good_data_registers_first_champion(first_run):
    spec, dr, states = first_run
    assert str(dr.state) == "success", states
    assert set(states.values()) == {"success"}
    assert versions(spec.name) == [1]
    assert alias(spec.name, C.ALIAS_CHAMPION) == 1
    assert alias(spec.name, C.ALIAS_CHALLENGER) == 1
    mv = client().get_model_version(spec.name, "1")
    assert mv.tags[C.TAG_DAG_RUN_ID] == dr.run_id
    assert mv.tags[C.TAG_GATE_DECISION] == "passed"
    assert float(mv.tags["metric.roc_auc"]) > 0.75
    assert len(mv.tags[C.TAG_DATA_DIGEST]) == 16
    # The MLflow run holds the record: tags, params, metrics, reports, dataset inputs.
    run = client().get_run(mv.run_id)
    assert run.data.tags[C.TAG_DAG_ID] == "credit_it_retrain"
    assert run.data.tags[C.TAG_VALIDATION] == "passed"
    assert run.data.tags[C.TAG_REASON] == "integration test"
    assert run.data.params["estimator"] == spec.model.estimator
    assert run.data.metrics["test_roc_auc"] > 0.75
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {
        "credit_it-train",
        "credit_it-test",
    }
    arts = {a.path for a in client().list_artifacts(run.info.run_id, "validation")}
    assert {C.ARTIFACT_VALIDATION_JSON, C.ARTIFACT_VALIDATION_HTML} <= arts


def test_registered_model_loads_and_predicts_with_signature(first_run):
    import mlflow.pyfunc

    spec, _, _ = first_run
    model = mlflow.pyfunc.load_model(f"models:/{spec.name}@{C.ALIAS_CHAMPION}")
    inputs = [i.name for i in model.metadata.get_input_schema().inputs]
    assert "Age" in inputs and "Home" in inputs
    rows = pd.read_csv(CREDIT).head(5)[inputs]
    from retrainer.core.training import prepare_features

    feats = spec.data.features
    pred = model.predict(prepare_features(rows, feats.numeric, feats.categorical))
    assert set(pred) <= {"good", "bad"}


def test_worse_model_is_rejected_and_champion_unchanged(first_run):
    spec, _, _ = first_run
    weak = spec_named(spec.name, params={"max_iter": 2, "max_depth": 1, "learning_rate": 0.01})
    dr, states = run_dag(weak)
    assert str(dr.state) == "success", states  # a rejection is an outcome, not a failure
    assert states["gate"] == "success"
    assert states["register_candidate"] == "skipped"
    assert versions(spec.name) == [1]
    assert alias(spec.name, C.ALIAS_CHAMPION) == 1
    run = client().search_runs(
        [client().get_experiment_by_name(spec.experiment_name).experiment_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{dr.run_id}'",
    )[0]
    assert run.data.tags[C.TAG_GATE_DECISION] == "rejected"
    assert "improvement" in run.data.tags[C.TAG_GATE_REASONS]
    assert run.data.metrics["champion_roc_auc"] > run.data.metrics["test_roc_auc"]


def test_threshold_failure_is_rejected(first_run):
    spec, _, _ = first_run
    dummy = spec_named(
        spec.name, estimator="sklearn.dummy.DummyClassifier", params={"strategy": "prior"}
    )
    dr, states = run_dag(dummy)
    assert states["register_candidate"] == "skipped"
    assert versions(spec.name) == [1]


def test_bad_batch_fails_at_validation_and_registers_nothing(first_run, tmp_path):
    spec, _, _ = first_run
    bad = pd.read_csv(CREDIT)
    bad.loc[:40, "Age"] = 140  # out of range
    bad.loc[:9, "Home"] = "castle"  # unknown category
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    dr, states = run_dag(spec, {"data_path": str(path)})
    assert str(dr.state) == "failed"
    assert states["validate_data"] == "failed"
    assert all(states[t] in ("upstream_failed", "None") for t in states if t != "validate_data"), (
        states
    )
    assert versions(spec.name) == [1]
    assert alias(spec.name, C.ALIAS_CHAMPION) == 1
    run = client().search_runs(
        [client().get_experiment_by_name(spec.experiment_name).experiment_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{dr.run_id}'",
    )[0]
    assert run.info.status == "FAILED"
    assert run.data.tags[C.TAG_VALIDATION] == "failed"


def test_rerunning_registration_never_creates_a_second_version(first_run):
    """Clearing register_candidate for a DAG run finds the version it already made."""
    from retrainer.steps import retrain as pipeline

    spec, dr, _ = first_run
    ctx = RunContext(dag_id=spec.retrain_dag_id, run_id=dr.run_id, task_id="register_candidate")
    xcom = dr.get_task_instance("gate").xcom_pull(task_ids="gate")
    again = pipeline.register_candidate(spec, ctx, xcom)
    assert again == {**again, "version": "1", "created": False}
    assert versions(spec.name) == [1]


def test_regression_spec_from_another_data_set_runs_unchanged(airflow_db):
    spec = load_spec(get_settings().models_dir / "diabetes_progression.yaml")
    dr, states = run_dag(spec)
    assert str(dr.state) == "success", states
    assert versions(spec.name) == [1]
    mv = client().get_model_version(spec.name, "1")
    assert float(mv.tags["metric.rmse"]) < 70


def test_each_task_records_its_cost_and_the_data_size(first_run):
    from retrainer.steps.cost import run_cost

    spec, dr, states = first_run
    mv = client().get_model_version(spec.name, "1")
    cost = run_cost(client(), mv.run_id)
    assert cost is not None
    tasks = ["evaluate_candidate", "gate", "register_candidate", "train_candidate", "validate_data"]
    assert list(cost.tasks) == tasks
    for task in tasks:
        spent = cost.tasks[task]
        assert spent["wall_s"] > 0 and spent["cpu_s"] >= 0 and spent["peak_mb"] > 50, task
    assert cost.tasks["train_candidate"]["cpu_s"] > 0.5  # a real fit
    params = client().get_run(mv.run_id).data.params
    assert cost.rows == int(params["rows.train"]) + int(params["rows.test"]) > 1000
    assert cost.data_bytes > 100_000


def test_the_version_carries_its_provenance_and_card(first_run):
    import json

    from retrainer.core.card import validate_mct
    from retrainer.steps import provenance
    from retrainer.steps.card import ARTIFACT_CARD_JSON, ARTIFACT_CARD_MD

    spec, dr, states = first_run
    mv = client().get_model_version(spec.name, "1")
    tags = mv.tags
    assert tags[provenance.TAG_CODE_VERSION].startswith(("git:", "retrainer=="))
    assert tags[provenance.TAG_LOCK_DIGEST].startswith("sha256:")
    assert tags[provenance.TAG_SEED] == "split=42,estimator=42"
    snapshot = tags[provenance.TAG_DATA_SNAPSHOT]
    assert snapshot.endswith("data.parquet") and Path(snapshot).exists()
    assert (
        "while the model version trained on it is registered"
        in tags[provenance.TAG_SNAPSHOT_RETENTION]
    )
    # The card: the version's description, and the run's card/ artifacts.
    # The one-paragraph summary opens the description, then the card follows.
    summary = mv.tags[C.TAG_VERSION_SUMMARY]
    assert mv.description.startswith(summary) and "Gate passed" in summary
    assert "\n\n# Model card: credit_it v1" in mv.description
    assert "## Evaluation" in mv.description and tags[C.TAG_DATA_DIGEST] in mv.description
    md = Path(client().download_artifacts(mv.run_id, ARTIFACT_CARD_MD)).read_text()
    assert md.startswith("# Model card: credit_it v1") and "validate_data" in md  # cost table
    card = json.loads(Path(client().download_artifacts(mv.run_id, ARTIFACT_CARD_JSON)).read_text())
    validate_mct(card)
    assert card["model_details"]["version"]["name"] == "1"
    assert {p["type"] for p in card["quantitative_analysis"]["performance_metrics"]} >= {
        "roc_auc",
        "f1",
    }
