"""The deploy DAG through dag.test(): promotion, ledger, rollback on a broken artifact, manual
rollback, and the human approval step, against the real registry and a real serving process."""

import threading
import time

import httpx
import pytest

from conftest import register_version
from retrainer import constants as C
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_srv"


def client():
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client(get_settings())


def alias(name, a):
    from retrainer.stores.registry import version_by_alias

    mv = version_by_alias(client(), name, a)
    return None if mv is None else str(mv.version)


def deploy(name, conf):
    from retrainer.orchestration.deploy import deploy_dag
    from retrainer.spec import load_spec

    dag = deploy_dag(load_spec(get_settings().models_dir / f"{name}.yaml"))
    dr = dag.test(run_conf=conf)
    return dr, {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def served_version(serving):
    return httpx.get(f"{serving}/models/{MODEL}").json()["version"]


def last_ledger(name):
    from retrainer.stores.ledger import history

    return history(client(), name)[0]


def test_promote_moves_aliases_reloads_and_smoke_tests(serving):
    before = alias(MODEL, C.ALIAS_CHAMPION)
    new = register_version(MODEL, f"promote-{time.time_ns()}")
    dr, states = deploy(MODEL, {"version": new, "origin": "retrain", "reason": "passed the gate"})
    assert str(dr.state) == "success", states
    assert states == {
        "promote_champion": "success",
        "reload_serving": "success",
        "smoke_test": "success",
        "rollback": "skipped",
    }
    assert alias(MODEL, C.ALIAS_CHAMPION) == new and alias(MODEL, C.ALIAS_PREVIOUS) == before
    assert served_version(serving) == new
    entry = last_ledger(MODEL)
    assert (entry.action, entry.from_version, entry.to_version) == ("promote", before, new)
    assert entry.reason == "passed the gate" and entry.dag_run_id == dr.run_id
    assert entry.mlflow_run_id and len(entry.data_digest) == 16 and "roc_auc" in entry.metrics
    assert entry.dag_run_url.endswith(f"/dags/{MODEL}_deploy/runs/{dr.run_id}")


def test_corrupted_artifact_rolls_back_and_old_champion_keeps_serving(serving):
    import mlflow
    from mlflow.artifacts import download_artifacts  # noqa: F401  (same store, local file)

    good = alias(MODEL, C.ALIAS_CHAMPION)
    bad = register_version(MODEL, f"corrupt-{time.time_ns()}")
    source = client().get_model_version(MODEL, bad).source  # models:/m-...
    location = mlflow.get_logged_model(source.split("/")[-1]).artifact_location
    model_file = next(
        p for p in __import__("pathlib").Path(location.removeprefix("file://")).rglob("*.skops")
    )
    model_file.write_bytes(b"this is not a model")

    dr, states = deploy(MODEL, {"version": bad, "origin": "retrain"})
    assert str(dr.state) == "failed", states
    assert states["reload_serving"] == "failed" and states["rollback"] == "failed"  # fails loudly
    assert states["smoke_test"] == "upstream_failed"
    assert alias(MODEL, C.ALIAS_CHAMPION) == good
    assert served_version(serving) == good
    assert (
        httpx.post(f"{serving}/models/{MODEL}/predict", json={"rows": []}).status_code == 422
    )  # alive
    entry = last_ledger(MODEL)
    assert (entry.action, entry.from_version, entry.to_version) == ("auto-rollback", bad, good)
    assert client().get_model_version(MODEL, bad).tags["retrainer.deploy"].startswith("failed")


def test_manual_rollback_to_an_earlier_version(serving):
    current = alias(MODEL, C.ALIAS_CHAMPION)
    dr, states = deploy(MODEL, {"version": "1", "reason": "bad predictions reported"})
    assert str(dr.state) == "success", states
    assert alias(MODEL, C.ALIAS_CHAMPION) == "1" and alias(MODEL, C.ALIAS_PREVIOUS) == current
    assert served_version(serving) == "1"
    entry = last_ledger(MODEL)
    assert (entry.action, entry.from_version, entry.to_version) == ("rollback", current, "1")


def test_unknown_version_fails_without_touching_anything(serving):
    current = alias(MODEL, C.ALIAS_CHAMPION)
    dr, states = deploy(MODEL, {"version": "999"})
    assert str(dr.state) == "failed" and states["promote_champion"] == "failed"
    assert alias(MODEL, C.ALIAS_CHAMPION) == current and served_version(serving) == current


def respond_when_asked(dag_id: str, choice: str, errors: list, timeout: float = 180) -> None:
    """Answer the approval task as a person would through the Airflow UI/API (the same route)."""
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with create_session() as session:
                ti = (
                    session.query(TaskInstance)
                    .filter_by(dag_id=dag_id, task_id="approve", state="awaiting_input")
                    .first()
                )
                if ti is not None:
                    update_hitl_detail(
                        dag_id=dag_id,
                        dag_run_id=ti.run_id,
                        task_id="approve",
                        update_hitl_detail_payload=UpdateHITLDetailPayload(
                            chosen_options=[choice], params_input={}
                        ),
                        user=SimpleAuthManagerUser(username="reviewer", role="admin"),
                        session=session,
                    )
                    return
            time.sleep(0.5)
        errors.append("the approve task never waited for input")
    except Exception as exc:  # surfaced by the test
        errors.append(repr(exc))


def run_with_answer(name: str, conf: dict, choice: str):
    """dag.test() in this (main) thread; a reviewer answers from another thread."""
    from retrainer.orchestration.deploy import deploy_dag
    from retrainer.spec import load_spec

    dag = deploy_dag(load_spec(get_settings().models_dir / f"{name}.yaml"))
    errors: list = []
    reviewer = threading.Thread(
        target=respond_when_asked, args=(f"{name}_deploy", choice, errors), daemon=True
    )
    reviewer.start()
    dr = dag.test(run_conf=conf)
    reviewer.join(timeout=10)
    assert not errors, errors
    return dr, {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_manual_approval_approve_then_reject(serving):
    name = "credit_appr"
    first = register_version(name, "appr-v1")  # the first model is champion at once
    second = register_version(name, "appr-v2")  # the challenger
    dr, states = run_with_answer(name, {"origin": "retrain"}, "Approve")
    assert states["approve"] == "success" and states["promote_champion"] == "success", states
    assert alias(name, C.ALIAS_CHAMPION) == second and alias(name, C.ALIAS_PREVIOUS) == first

    third = register_version(name, "appr-v3")
    dr, states = run_with_answer(name, {"origin": "retrain"}, "Reject")
    assert states["approve"] == "success" and states["promote_champion"] == "skipped", states
    assert states["rollback"] == "skipped" and str(dr.state) == "success"
    assert alias(name, C.ALIAS_CHAMPION) == second, "a rejection leaves the champion as it was"
    assert alias(name, C.ALIAS_CHALLENGER) == third
