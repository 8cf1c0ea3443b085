"""OpenLineage events of one retrain, through Airflow's OpenLineage provider and its file
transport (no network): every task's run, its datasets, and the parent run facets that tie
the task runs to their DAG run. The retrain runs in its own process with lineage configured
(the provider decides once per process whether it is enabled)."""

import json
import os
import subprocess
import sys
import time

import pytest

import testenv
from retrainer.config.environment import process_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a retrain in its own process
MODEL = "credit_lineage"

SCRIPT = """
import sys
from retrainer.config.settings import get_settings
from retrainer.orchestration.retrain import retrain_dag
from retrainer.spec import load_spec

spec = load_spec(get_settings().models_dir / "credit_lineage.yaml")
dr = retrain_dag(spec, get_settings().models_dir / "credit_lineage.yaml").test(
    run_conf={"reason": "lineage test"}
)
states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
print("RUN", dr.run_id, states)
sys.exit(0 if states["register_candidate"] == "success" else 1)
"""


def events_of_one_retrain(tmp_path):
    from dataclasses import replace

    log = tmp_path / "events.jsonl"
    settings = replace(
        testenv.SETTINGS,
        lineage_transport=json.dumps({"type": "file", "log_file_path": str(log), "append": True}),
    )
    env = dict(os.environ, **process_environment(settings))
    env["AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD"] = "true"  # no fork per event in the test
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    run_id = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RUN"))
    deadline = time.monotonic() + 30  # events are written from a thread
    while time.monotonic() < deadline:
        events = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        if sum(e["eventType"] == "COMPLETE" for e in events) >= 5:
            break
        time.sleep(0.5)
    return run_id, events


def test_one_retrain_emits_task_runs_with_datasets_and_parents(airflow_db, tmp_path):
    run_id, events = events_of_one_retrain(tmp_path)
    complete = {
        e["job"]["name"]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].startswith(f"{MODEL}_retrain.")
    }
    tasks = ["validate_data", "train_candidate", "evaluate_candidate", "gate", "register_candidate"]
    assert set(complete) >= {f"{MODEL}_retrain.{t}" for t in tasks}, sorted(complete)
    assert all(e["job"]["namespace"] == "retrainer" for e in complete.values())

    def names(task, side):
        return {(d["namespace"], d["name"]) for d in complete[f"{MODEL}_retrain.{task}"][side]}

    settings = testenv.SETTINGS
    source = next(iter(names("validate_data", "inputs")))
    assert source[0] == "file" and source[1].endswith(f"data/{MODEL}")  # the training folder
    report = {n for n in names("validate_data", "outputs") if n[0] == settings.tracking_uri}
    assert len(report) == 1 and next(iter(report))[1].endswith("validation/result.json")
    # validation -> training: the report and the snapshot written are what training reads.
    assert report <= names("train_candidate", "inputs")
    snapshot = {n for n in names("validate_data", "outputs") if n[0] == "file"}
    assert snapshot <= names("train_candidate", "inputs")
    # training -> gate -> version.
    model = {n for n in names("train_candidate", "outputs") if n[1].endswith("/model")}
    assert (
        model
        and model <= names("gate", "inputs")
        and model <= names("register_candidate", "inputs")
    )
    version = names("register_candidate", "outputs")
    assert version == {(settings.tracking_uri, f"models/{MODEL}/versions/1")}

    # Parent/child: every task run's parent is the DAG run, whose own events carry that run id.
    parents = {e["run"]["facets"]["parent"]["run"]["runId"] for e in complete.values()}
    assert len(parents) == 1
    parent = complete[f"{MODEL}_retrain.validate_data"]["run"]["facets"]["parent"]
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("retrainer", f"{MODEL}_retrain")
    task_runs = {e["run"]["runId"] for e in complete.values()}
    assert len(task_runs) == len(complete)  # one OpenLineage run per task run
    starts = [e for e in events if e["eventType"] == "START" and e["job"]["name"] in complete]
    assert {e["run"]["runId"] for e in starts} == task_runs  # START and COMPLETE pair up
    dag_events = [e for e in events if e["job"]["name"] == f"{MODEL}_retrain"]
    if dag_events:  # DAG-run events, when the run's state change is reported
        assert {e["run"]["runId"] for e in dag_events} == parents
