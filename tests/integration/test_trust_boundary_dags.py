"""The retrain DAG through dag.test(): a batch that lost a column the champion takes, and a spec
that names a command, both stop at validate_data for good, before anything else runs."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

import testenv
from retrainer import constants as C

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CREDIT = ROOT / "examples" / "credit" / "credit_data.csv"
MODEL = "credit_inferred"

# A credit spec whose features are inferred from each batch; written before any dag.test()
# syncs the DAGs folder, so its DAGs exist there.
_raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
_raw.update(name=MODEL)
_raw["data"].pop("features")
_raw["data"]["train"] = str(CREDIT)
_raw["model"]["params"]["max_iter"] = 60  # a quick champion is enough here
(testenv.MODELS / f"{MODEL}.yaml").write_text(yaml.safe_dump(_raw, sort_keys=False))


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def run_dag(s, conf=None):
    from retrainer.orchestration.retrain import retrain_dag

    dr = retrain_dag(s, testenv.MODELS / f"{MODEL}.yaml").test(run_conf=conf or {})
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def client():
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client()


def versions():
    return sorted(int(v.version) for v in client().search_model_versions(f"name = '{MODEL}'"))


@pytest.fixture(scope="module")
def champion(airflow_db):
    dr, tis = run_dag(spec())
    assert str(dr.state) == "success", {t: str(ti.state) for t, ti in tis.items()}
    assert versions() == [1]
    return dr


def test_batch_missing_a_champion_input_fails_validation_naming_it(champion, tmp_path):
    batch = pd.read_csv(CREDIT).drop(columns=["Seniority"])  # not named by validation.columns
    path = tmp_path / "no_seniority.csv"
    batch.to_csv(path, index=False)
    dr, tis = run_dag(spec(), {"data_path": str(path)})
    states = {t: str(ti.state) for t, ti in tis.items()}
    assert str(dr.state) == "failed"
    assert states["validate_data"] == "failed" and tis["validate_data"].try_number == 1
    assert states["train_candidate"] == "upstream_failed", states
    assert versions() == [1]
    run = client().search_runs(
        [client().get_experiment_by_name(f"retrainer/{MODEL}").experiment_id],
        filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{dr.run_id}'",
    )[0]
    assert run.info.status == "FAILED" and run.data.tags[C.TAG_VALIDATION] == "failed"
    report = client().download_artifacts(run.info.run_id, C.ARTIFACT_VALIDATION_JSON)
    import json

    failed = [r for r in json.loads(Path(report).read_text())["results"] if not r["success"]]
    assert [(r["column"], r["expectation"]) for r in failed] == [
        ("Seniority", "expect_column_to_exist")
    ]
    assert "champion's inputs" in failed[0]["spec_key"]


def test_command_as_estimator_never_runs_even_on_retry(airflow_db, tmp_path):
    marker = tmp_path / "ran"
    s = spec()
    # A spec object that skipped parsing (the allowlist refuses it there): the task refuses it
    # too, permanently, so Airflow's retries never run it either.
    evil = s.model_copy(
        update={
            "model": s.model.model_construct(
                estimator="os.system", params={"command": f"touch {marker}"}
            )
        }
    )
    dr, tis = run_dag(evil)
    assert str(dr.state) == "failed"
    ti = tis["validate_data"]
    assert str(ti.state) == "failed" and ti.try_number == 1  # no retry
    assert all(str(t.state) == "upstream_failed" for n, t in tis.items() if n != "validate_data")
    assert not marker.exists()
