"""`deployment.approval: manual` through the real scheduler and triggerer: the deploy DAG's
ApprovalOperator (Airflow's human-in-the-loop) waits for a person; a rejection leaves the champion
as it was, an approval promotes. Answered through Airflow's REST API with the calls the Models
page's *Approve pending deploy* button makes (list the pending HITL details, PATCH the choice)."""

import time
from urllib.parse import quote

import pytest
from e2e_platform import champion, running_platform, shipped_spec

from retrainer.config.secrets import airflow_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "breast_cancer"
DEPLOY = f"{MODEL}_deploy"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from retrainer.platform.airflow_api import AirflowClient

    raw = shipped_spec(MODEL, deployment={"approval": "manual"})
    raw.setdefault("monitoring", {})["schedule"] = None
    with running_platform(tmp_path_factory.mktemp("approval"), {MODEL: raw}) as settings:
        client = AirflowClient(settings.airflow_url, *airflow_credentials(settings))
        for kind in ("retrain", "deploy"):
            client.wait_for_dag(f"{MODEL}_{kind}", timeout=180)
        yield settings, client


def pending_approval(api, run_id: str, timeout: float = 300) -> dict:
    """The deploy run's HITL detail once the approve task waits for a person."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        details = api.request(
            "GET", f"/dags/{DEPLOY}/dagRuns/~/hitlDetails", params={"response_received": False}
        )["hitl_details"]
        ours = [d for d in details if d["task_instance"]["dag_run_id"] == run_id]
        if ours:
            return ours[0]
        assert api.dag_run(DEPLOY, run_id)["state"] in ("queued", "running")
        time.sleep(2)
    raise AssertionError(f"{DEPLOY} run {run_id} did not wait for an approval in {timeout} s")


def answer(api, detail: dict, choice: str) -> dict:
    ti = detail["task_instance"]
    path = (
        f"/dags/{ti['dag_id']}/dagRuns/{quote(ti['dag_run_id'], safe='')}"
        f"/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails"
    )
    return api.request("PATCH", path, json={"chosen_options": [choice], "params_input": {}})


def decided(api, run_id: str, detail: dict, choice: str, timeout: float = 300) -> tuple[dict, int]:
    """Answer `choice`, then wait for the run to end, answering again if the approval is asked
    again (a retry after Airflow's scheduler failed the answered task on a stale executor event,
    apache/airflow#71172; a person would see it back in Required Actions). The run and the count
    of questions answered."""
    answered = answer(api, detail, choice)
    assert answered["chosen_options"] == [choice], answered
    asks, deadline = 1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.dag_run(DEPLOY, run_id)
        if run["state"] not in ("queued", "running"):
            return run, asks
        details = api.request(
            "GET", f"/dags/{DEPLOY}/dagRuns/~/hitlDetails", params={"response_received": False}
        )["hitl_details"]
        for again in (d for d in details if d["task_instance"]["dag_run_id"] == run_id):
            print(f"{run_id}: asked again (try {again['task_instance']['try_number']}); answering")
            answer(api, again, choice)
            asks += 1
        time.sleep(2)
    raise AssertionError(f"{DEPLOY} run {run_id} did not end in {timeout} s after {choice}")


def states(api, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in api.task_instances(DEPLOY, run_id)}


def retrain_and_wait_for_approval(client, reason: str) -> tuple[str, dict]:
    """A retrain, and the HITL detail of the deploy it started (run id deploy__<retrain run>)."""
    retrain = client.trigger(f"{MODEL}_retrain", {"reason": reason})
    done = client.wait_for_run(f"{MODEL}_retrain", retrain["dag_run_id"], timeout=600)
    assert done["state"] == "success"
    deploy = f"deploy__{retrain['dag_run_id']}"
    detail = pending_approval(client, deploy)
    assert detail["subject"] == f"Deploy {MODEL}?" and detail["options"] == ["Approve", "Reject"]
    assert states(client, deploy)["promote_champion"] in (None, "none", "scheduled")
    return deploy, detail


def test_an_approved_deploy_promotes_and_a_rejected_one_changes_nothing(api):
    from retrainer.stores.registry import version_by_alias
    from retrainer.stores.tracking import mlflow_client

    settings, client = api
    user = airflow_credentials(settings)[0]

    # v1 (the first version is champion from registration): approve its deploy.
    first, detail = retrain_and_wait_for_approval(client, "v1")
    run, approvals = decided(client, first, detail, "Approve")
    approved = states(client, first)
    assert run["state"] == "success", approved
    assert approved["promote_champion"] == "success" and approved["smoke_test"] == "success"
    assert champion(settings, MODEL) == "1"

    # v2: reject. The approval task succeeds (a person answered); all after it is skipped.
    second, detail = retrain_and_wait_for_approval(client, "v2")
    _, rejections = decided(client, second, detail, "Reject")
    rejected = states(client, second)
    assert rejected["approve"] == "success", rejected
    assert rejected["promote_champion"] == "skipped", rejected
    assert champion(settings, MODEL) == "1"  # v2 stays the challenger, not served
    assert str(version_by_alias(mlflow_client(settings), MODEL, "challenger").version) == "2"

    answered_list = client.request(
        "GET", f"/dags/{DEPLOY}/dagRuns/~/hitlDetails", params={"response_received": True}
    )["hitl_details"]
    choices = sorted(d["chosen_options"][0] for d in answered_list)
    # One answer per question asked (a retried approval's earlier try may be kept as history).
    assert sorted(set(choices)) == ["Approve", "Reject"], choices
    assert len(choices) <= approvals + rejections, (choices, approvals, rejections)
    assert {d["responded_by_user"]["name"] for d in answered_list} == {user}
