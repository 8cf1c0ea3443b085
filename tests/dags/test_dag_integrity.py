"""Every DAG file loads, with the right shape, and without heavy imports at parse time."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
HEAVY = ("mlflow", "sklearn", "pandas", "great_expectations", "evidently", "boto3")
RETRAIN_TASKS = [
    "validate_data",
    "train_candidate",
    "evaluate_candidate",
    "gate",
    "register_candidate",
    "trigger_deploy",
]
DEPLOY_TASKS = ["promote_champion", "reload_serving", "smoke_test", "rollback"]


def dagbag(models_dir: Path):
    from airflow.dag_processing.dagbag import DagBag

    before = os.environ.get("RETRAINER_MODELS_DIR")
    os.environ["RETRAINER_MODELS_DIR"] = str(models_dir)
    try:
        return DagBag(str(DAGS), safe_mode=True)
    finally:
        if before is None:
            del os.environ["RETRAINER_MODELS_DIR"]
        else:
            os.environ["RETRAINER_MODELS_DIR"] = before


def spec_of(name):
    from retrainer.spec import load_spec

    return load_spec(ROOT / "models" / f"{name}.yaml")


def rollout(name):
    return spec_of(name).deployment.rollout.model_dump()


@pytest.fixture(scope="module")
def bag():
    return dagbag(ROOT / "models")


def test_no_import_errors(bag):
    assert bag.import_errors == {}
    assert bag.dagbag_stats, "no DAG file was parsed"


def test_one_dag_set_per_spec(bag):
    specs = sorted(p.stem for p in (ROOT / "models").glob("*.yaml"))
    assert specs
    expected = [f"{name}_{kind}" for name in specs for kind in ("retrain", "deploy", "monitor")]
    expected += [
        f"{name}_rollout_control" for name in specs if rollout(name)["strategy"] != "direct"
    ]
    assert sorted(bag.dag_ids) == sorted(expected)


def test_retrain_dag_shape(bag):
    for dag_id in [d for d in bag.dag_ids if d.endswith("_retrain")]:
        dag = bag.dags[dag_id]
        assert {"retrainer", "retrain"} <= set(dag.tags)
        assert dag.max_active_runs == 1
        assert dag.doc_md and "validate_data" in dag.doc_md
        assert set(dag.params.keys()) == {"data_path", "reason", "trigger"}
        assert [t.task_id for t in dag.topological_sort()] == RETRAIN_TASKS
        for t in dag.tasks:
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries for transient errors"


def test_deploy_dag_shape(bag):
    import yaml as _yaml

    for dag_id in [d for d in bag.dag_ids if d.endswith("_deploy")]:
        dag = bag.dags[dag_id]
        name = dag_id.removesuffix("_deploy")
        spec = _yaml.safe_load((ROOT / "models" / f"{name}.yaml").read_text())
        manual = spec.get("deployment", {}).get("approval") == "manual"
        order = [t.task_id for t in dag.topological_sort()]
        plan = rollout(name)
        if plan["strategy"] == "direct":
            assert order == (["approve"] if manual else []) + DEPLOY_TASKS
        else:  # the rollout's tasks, the person's approval before clients see the challenger
            canary = [f"canary_step_{i + 1}" for i in range(len(plan["canary_steps"]))]
            first = ["start_rollout"] + (
                ["wait_shadow", "decide_shadow"] if "shadow" in plan["strategy"] else []
            )
            rest = (["approve"] if manual else []) + canary + DEPLOY_TASKS + ["end_rollout"]
            if manual:  # a first deployment still goes through approve: no branch around it
                assert order == first + rest
            else:  # a first deployment branches past the rollout's tasks, straight to promotion
                assert [t for t in order if t != "direct_deployment"] == first + rest
                direct = dag.task_dict["direct_deployment"]
                assert direct.upstream_task_ids == {"start_rollout"}
                assert direct.downstream_task_ids == {"promote_champion"}
            promote = dag.task_dict["promote_champion"]
            assert promote.trigger_rule == "none_failed_min_one_success"
            assert "start_rollout" not in promote.upstream_task_ids  # a rejection must not promote
            for task_id in canary + ["wait_shadow"]:
                if task_id in dag.task_dict:
                    sensor = dag.task_dict[task_id]
                    # waits of a minute or more hold no worker slot between checks
                    seconds = spec_of(name).deployment.rollout.check_seconds
                    assert sensor.mode == ("reschedule" if seconds >= 60 else "poke")
                    assert sensor.poke_interval == spec_of(name).deployment.rollout.check_seconds
                    # Airflow's scheduler can fail a rescheduled check on a stale executor event
                    # (apache/airflow#71172): the waits retry; a stopped rollout does not.
                    assert sensor.retries >= 1
            assert dag.task_dict["end_rollout"].trigger_rule == "all_done"
            control = bag.dags[f"{name}_rollout_control"]
            assert set(control.params.keys()) == {"action"} and control.max_active_runs == 1
        assert {"retrainer", "deploy"} <= set(dag.tags) and dag.max_active_runs == 1
        assert set(dag.params.keys()) == {"version", "reason", "origin"}
        assert dag.task_dict["rollback"].trigger_rule == "one_failed"
        if manual:
            assert type(dag.task_dict["approve"]).__name__ == "ApprovalOperator"
            assert dag.task_dict["approve"].retries >= 1  # the same race after a deferral


def test_minute_long_waits_free_their_slot_and_manual_approval_keeps_the_rollout_path(tmp_path):
    spec = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    spec["deployment"]["rollout"].update(check_interval="2m", max_duration="1h", bake_time="30m")
    spec["deployment"]["approval"] = "manual"
    (tmp_path / "credit_default.yaml").write_text(yaml.safe_dump(spec))
    bag = dagbag(tmp_path)
    dag = bag.dags["credit_default_deploy"]
    for task_id in ("wait_shadow", "canary_step_1", "canary_step_2"):
        assert dag.task_dict[task_id].mode == "reschedule"
        assert dag.task_dict[task_id].poke_interval == 120
    assert "direct_deployment" not in dag.task_dict  # a first deployment is approved too
    approve = dag.task_dict["approve"]
    assert approve.upstream_task_ids == {"start_rollout", "decide_shadow"}
    assert dag.task_dict["promote_champion"].trigger_rule == "none_failed_min_one_success"


def test_monitor_dag_shape(bag):
    for dag_id in [d for d in bag.dag_ids if d.endswith("_monitor")]:
        dag = bag.dags[dag_id]
        name = dag_id.removesuffix("_monitor")
        spec = yaml.safe_load((ROOT / "models" / f"{name}.yaml").read_text())
        schedule = spec.get("monitoring", {}).get("schedule", "@daily")
        assert {"retrainer", "monitor"} <= set(dag.tags) and dag.max_active_runs == 1
        assert dag.schedule == schedule and not dag.catchup
        assert set(dag.params.keys()) == {"ignore_cooldown"}
        order = [t.task_id for t in dag.topological_sort()]
        assert order[:2] == ["read_window", "measure_drift"]
        assert set(order[2:]) == {"evidently_report", "trigger_retrain"}
        assert dag.task_dict["trigger_retrain"].upstream_task_ids == {"measure_drift"}


def test_broken_spec_is_isolated_and_visible(tmp_path):
    shutil.copy(ROOT / "models" / "credit_default.yaml", tmp_path)
    broken = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    broken["name"] = "broken_model"
    broken["gate"]["primary_metric"] = "rmse"
    (tmp_path / "broken_model.yaml").write_text(yaml.safe_dump(broken))
    (tmp_path / "garbage.yaml").write_text("name: [unclosed\n")
    bag = dagbag(tmp_path)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "credit_default_retrain",
        "credit_default_deploy",
        "credit_default_monitor",
        "credit_default_rollout_control",
        "retrainer_spec_errors",
    }
    errors_dag = bag.dags["retrainer_spec_errors"]
    assert "broken_model.yaml" in errors_dag.doc_md and "garbage.yaml" in errors_dag.doc_md
    assert "gate.primary_metric: 'rmse' is not a classification metric" in errors_dag.doc_md
    assert "broken-spec" in errors_dag.tags


def test_dag_files_import_no_heavy_module():
    """A fresh interpreter parses the DAG files; none of the heavy libraries may get imported."""
    code = (
        "import sys, json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag({str(DAGS)!r}, safe_mode=True)\n"
        "assert not bag.import_errors, bag.import_errors\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
