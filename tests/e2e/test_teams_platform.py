"""`retrainer up` with a spec that names `access_control.team`: the platform runs Airflow in
multi-team mode, the dag-processor parses the team's DAGs from the team's bundle, and the simple
auth manager shows a team's user that team's models (and those without a team) only, in
Airflow's DAG list and on the Models page; a user without the team does not see them."""

import json

import httpx
import pytest
from e2e_platform import running_platform, shipped_spec

from retrainer.config.secrets import airflow_credentials

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KINDS = ("retrain", "deploy", "monitor")


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    specs = {}
    for name, team in (("open_bc", None), ("path_bc", "pathology")):
        raw = shipped_spec("breast_cancer", name=name, deployment={"approval": "auto"})
        raw.setdefault("monitoring", {})["schedule"] = None
        if team:
            raw["access_control"] = {"team": team}
        specs[name] = raw
    with running_platform(
        tmp_path_factory.mktemp("teams"),
        specs,
        airflow_users="path_user:user:pathology,plain_viewer:viewer",
    ) as settings:
        yield settings


def test_a_teams_models_are_shown_to_its_users_only(platform):
    from retrainer.platform.airflow_api import AirflowClient

    settings = platform
    admin = AirflowClient(settings.airflow_url, *airflow_credentials(settings))
    for model in ("open_bc", "path_bc"):
        for kind in KINDS:
            admin.wait_for_dag(f"{model}_{kind}", timeout=180)
    assert admin.get_dag("path_bc_retrain")["bundle_name"] == "team-pathology"
    # The api-server generated the other users' passwords into Airflow's passwords file.
    passwords = json.loads(settings.airflow_passwords_file.read_text())

    def sees(user: str) -> tuple[set[str], set[str]]:
        client = AirflowClient(settings.airflow_url, user, passwords[user])
        dags = client.request("GET", "/dags", params={"dag_id_pattern": "_bc_", "limit": 50})
        page = httpx.get(
            f"{settings.airflow_url}/retrainer/api/models", headers=client._headers(), timeout=30
        )
        assert page.status_code == 200, page.text
        return {d["dag_id"] for d in dags["dags"]}, {m["name"] for m in page.json()["models"]}

    dags, models = sees("path_user")
    assert dags == {f"{m}_{k}" for m in ("open_bc", "path_bc") for k in KINDS}
    assert models == {"open_bc", "path_bc"}
    dags, models = sees("plain_viewer")
    assert dags == {f"open_bc_{k}" for k in KINDS} and models == {"open_bc"}
