"""Fault: the S3 endpoint goes away in the middle of a retrain and comes back. A loopback proxy in
front of moto's S3 server is cut (the bucket survives, as a real outage would leave it) while
train_candidate runs; the task fails as transient, Airflow retries it, and the DAG run ends with
exactly one MLflow run and one model version."""

import threading
import time
from pathlib import Path

import pytest
import yaml

import testenv
from faultproxy import TcpProxy
from retrainer import constants as C

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "credit_s3cut"
OUTAGE_S = 12  # longer than boto's own retries: the task itself must fail and be retried

_raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
_raw.update(name=MODEL)
_raw["data"]["train"] = str(ROOT / "examples" / "credit" / "credit_data.csv")
_raw["model"]["params"]["max_iter"] = 60
(testenv.MODELS / f"{MODEL}.yaml").write_text(yaml.safe_dump(_raw, sort_keys=False))


def test_s3_outage_during_training_is_retried_into_one_run_and_one_version(
    airflow_db, s3_endpoint, s3_bucket, monkeypatch
):
    import boto3

    from retrainer.orchestration.retrain import retrain_dag
    from retrainer.spec import load_spec
    from retrainer.stores.tracking import mlflow_client

    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port))
    monkeypatch.setenv("RETRAINER_S3_ENDPOINT_URL", proxy.url)  # the tasks go through the proxy
    monkeypatch.setenv("RETRAINER_WORK_URI", f"s3://{s3_bucket}/work")
    direct = boto3.client("s3", endpoint_url=s3_endpoint)  # the test watches moto directly
    events: dict[str, float] = {}

    def cut_when_training_starts() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            listed = direct.list_objects_v2(Bucket=s3_bucket, Prefix=f"work/{MODEL}/")
            keys = [o["Key"] for o in listed.get("Contents", [])]
            if any(k.endswith("/data.parquet") for k in keys):  # validate_data's snapshot
                proxy.cut()
                events["cut"] = time.monotonic()
                time.sleep(OUTAGE_S)
                proxy.restore()
                events["restored"] = time.monotonic()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=cut_when_training_starts, daemon=True)
    watcher.start()
    spec = load_spec(testenv.MODELS / f"{MODEL}.yaml")
    try:
        dr = retrain_dag(spec, testenv.MODELS / f"{MODEL}.yaml").test()
    finally:
        watcher.join(timeout=OUTAGE_S + 5)
        proxy.close()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    states = {t: (str(ti.state), ti.try_number) for t, ti in tis.items()}
    assert "restored" in events, "the outage never happened"
    assert str(dr.state) == "success", states
    assert tis["validate_data"].try_number == 1
    assert tis["train_candidate"].try_number >= 2, states  # failed in the outage, then retried
    assert {s for s, _ in states.values()} == {"success"}, states

    client = mlflow_client()
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{C.TAG_DAG_RUN_ID}` = '{dr.run_id}'"
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].run_id == runs[0].info.run_id
    # The logged model is the retry's, and the run holds one model, not one per attempt.
    assert len(client.search_logged_models([experiment.experiment_id])) == 1
