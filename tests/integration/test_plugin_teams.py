"""Spec `access_control.team` with the auth manager both profiles run (Airflow's simple auth
manager; the FAB provider is not installed) in Airflow's multi-team mode: each team's models'
DAGs are parsed from the team's DAG bundle, and a user of one team sees and acts on only that
team's models (and the models without a team), in Airflow's own DAG list and REST API and on the
Models page. Airflow's api-server app in-process, its real auth manager and database."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import testenv
from retrainer.config.secrets import airflow_credentials

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODELS = {"team_open": None, "team_fraud": "fraud", "team_credit": "credit"}
USERS = {"fraud_user": ("user", "fraud"), "credit_viewer": ("viewer", "credit")}


def write_specs(folder: Path, models: dict[str, str | None]) -> None:
    folder.mkdir(exist_ok=True)
    for name, team in models.items():
        raw = yaml.safe_load((ROOT / "models" / "breast_cancer.yaml").read_text())
        raw.update(name=name, deployment={"approval": "auto"})
        raw["data"]["train"] = str(ROOT / raw["data"]["train"])
        if team:
            raw["access_control"] = {"team": team, "roles": {f"{team}_ops": "edit"}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def teams(airflow_db, tmp_path_factory):
    """Multi-team mode as `retrainer up` sets it for these specs: the team bundles written, the
    teams created by Airflow's CLI, the bundles and their DAGs parsed into Airflow's database."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    from retrainer.orchestration.teams import (
        DEFAULT_BUNDLE,
        bundle_name,
        spec_teams,
        team_environment,
        write_team_bundles,
    )

    base = tmp_path_factory.mktemp("teams")
    write_specs(base / "models", MODELS)
    names = spec_teams(base / "models")
    assert names == ["credit", "fraud"]
    admin, admin_password = airflow_credentials(airflow_db)
    passwords = json.loads(airflow_db.airflow_passwords_file.read_text())
    saved_passwords = dict(passwords)
    passwords.update({user: f"pw-{user}" for user in USERS})
    airflow_db.airflow_passwords_file.write_text(json.dumps(passwords))
    mp = pytest.MonkeyPatch()
    env = {
        "RETRAINER_MODELS_DIR": str(base / "models"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            [f"{admin}:admin"] + [f"{u}:{role}:{team}" for u, (role, team) in USERS.items()]
        ),
        **team_environment(names, base / "bundles"),
    }
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        write_team_bundles(names, base / "bundles")
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run(
            [airflow, "teams", "sync"], env=dict(os.environ), check=True, capture_output=True
        )
        DagBundlesManager().sync_bundles_to_db()
        folders = {bundle_name(t): base / "bundles" / t for t in names}
        folders[DEFAULT_BUNDLE] = ROOT / "dags"
        for name, folder in folders.items():
            bag = DagBag(dag_folder=folder, bundle_path=folder, bundle_name=name)
            assert not bag.import_errors, bag.import_errors
            sync_bag_to_db(bag, name, None)
        yield admin, admin_password, base / "models"
    finally:
        mp.undo()
        airflow_db.airflow_passwords_file.write_text(json.dumps(saved_passwords))
        DagBundlesManager().sync_bundles_to_db()  # the session's own bundle config again


@pytest.fixture(scope="module")
def client(teams):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    from retrainer.orchestration.plugin.data import clear_cache

    clear_cache()
    return TestClient(create_app("core"))


def login(client, user: str, password: str) -> dict[str, str]:
    resp = client.post("/auth/token", json={"username": user, "password": password})
    assert resp.status_code in (200, 201), resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def dag_list(client, auth) -> set[str]:
    resp = client.get(
        "/api/v2/dags", params={"dag_id_pattern": "team_", "limit": 100}, headers=auth
    )
    assert resp.status_code == 200, resp.text
    return {d["dag_id"] for d in resp.json()["dags"]}


def models_page(client, auth) -> dict[str, dict]:
    resp = client.get("/retrainer/api/models", headers=auth)
    assert resp.status_code == 200, resp.text
    return {m["name"]: m for m in resp.json()["models"]}


def dags_of(*models: str) -> set[str]:
    return {f"{m}_{kind}" for m in models for kind in ("retrain", "deploy", "monitor")}


def test_a_team_user_sees_and_acts_on_its_models_only(client):
    auth = login(client, "fraud_user", "pw-fraud_user")
    assert dag_list(client, auth) == dags_of("team_open", "team_fraud")
    rows = models_page(client, auth)
    assert set(rows) == {"team_open", "team_fraud"}
    assert rows["team_fraud"]["can_act"] is True
    # Airflow itself refuses the other team's DAGs: no read, no trigger.
    assert client.get("/api/v2/dags/team_credit_retrain", headers=auth).status_code == 403
    refused = client.post(
        "/api/v2/dags/team_credit_retrain/dagRuns", json={"logical_date": None}, headers=auth
    )
    assert refused.status_code == 403
    assert client.get("/api/v2/dags/team_fraud_retrain", headers=auth).status_code == 200


def test_a_team_viewer_sees_its_models_read_only(client):
    auth = login(client, "credit_viewer", "pw-credit_viewer")
    assert dag_list(client, auth) == dags_of("team_open", "team_credit")
    rows = models_page(client, auth)
    assert set(rows) == {"team_open", "team_credit"}
    assert not any(row["can_act"] for row in rows.values())


def test_the_admin_sees_every_team(client, teams):
    auth = login(client, *teams[:2])
    assert dag_list(client, auth) == dags_of(*MODELS)
    rows = models_page(client, auth)
    assert set(rows) == set(MODELS) and all(row["can_act"] for row in rows.values())


def test_the_dags_carry_the_team_and_the_fab_roles(teams):
    from airflow.models.dag import DagModel

    assert DagModel.get_dag_id_to_team_name_mapping(sorted(dags_of(*MODELS))) == {
        dag_id: team for m, team in MODELS.items() if team for dag_id in dags_of(m)
    }
    from retrainer.config.settings import get_settings
    from retrainer.orchestration.dags import build_dags

    dag = build_dags("deploy", get_settings().models_dir, team="fraud")["team_fraud_deploy"]
    assert set(dag.access_control) == {"fraud_ops"}
    assert testenv.SETTINGS.models_dir != get_settings().models_dir


def test_a_team_model_not_parsed_yet_is_shown_to_its_team_only(client, teams):
    """Between a spec's arrival and the dag-processor's parse, Airflow knows no team for its
    DAGs: the page goes by the spec's team then."""
    write_specs(teams[2], {"team_late": "credit"})
    fraud = models_page(client, login(client, "fraud_user", "pw-fraud_user"))
    credit = models_page(client, login(client, "credit_viewer", "pw-credit_viewer"))
    assert "team_late" not in fraud and "team_late" in credit


def test_a_broken_spec_is_shown_to_the_team_it_names_only(client, teams):
    """A team's broken file (a bad metric, a file name that is not the model's) goes to the
    team's own errors DAG and page listing, not to everyone's; a file whose team cannot be read
    stays in the shared one."""
    from airflow.dag_processing.dagbag import DagBag

    from retrainer.config.settings import get_settings
    from retrainer.orchestration.dags import build_dags
    from retrainer.orchestration.teams import bundle_name, spec_teams

    models = teams[2]
    write_specs(models, {"team_fraud_bad": "fraud", "misnamed": "fraud"})
    raw = yaml.safe_load((models / "team_fraud_bad.yaml").read_text())
    raw["gate"]["primary_metric"] = "rmse"
    (models / "team_fraud_bad.yaml").write_text(yaml.safe_dump(raw))
    raw = yaml.safe_load((models / "misnamed.yaml").read_text())
    (models / "misnamed.yaml").write_text(yaml.safe_dump(dict(raw, name="other_name")))
    (models / "garbled.yaml").write_text("name: [unclosed\naccess_control: {team: fraud}\n")
    try:
        assert spec_teams(models) == ["credit", "fraud"]
        assert get_settings().models_dir == models
        fraud = build_dags("retrain", team="fraud")["retrainer_spec_errors_fraud"]
        assert "team_fraud_bad.yaml" in fraud.doc_md and "misnamed.yaml" in fraud.doc_md
        assert "garbled.yaml" not in fraud.doc_md
        shared = build_dags("retrain", team=None)["retrainer_spec_errors"]
        assert "garbled.yaml" in shared.doc_md and "team_fraud_bad" not in shared.doc_md
        assert "retrainer_spec_errors_credit" not in build_dags("retrain", team="credit")
        folder = models.parent / "bundles" / "fraud"
        bag = DagBag(dag_folder=folder, bundle_path=folder, bundle_name=bundle_name("fraud"))
        assert not bag.import_errors and "retrainer_spec_errors_fraud" in bag.dag_ids

        def listed(user: str) -> set[str]:
            auth = login(client, user, teams[1] if user == teams[0] else f"pw-{user}")
            resp = client.get("/retrainer/api/models", headers=auth)
            assert resp.status_code == 200, resp.text
            return set(resp.json()["broken_specs"])

        everything = {"team_fraud_bad.yaml", "misnamed.yaml", "garbled.yaml"}
        assert listed("fraud_user") == everything
        assert listed("credit_viewer") == {"garbled.yaml"}
        assert listed(teams[0]) == everything  # the admin
    finally:
        for name in ("team_fraud_bad", "misnamed", "garbled"):
            (models / f"{name}.yaml").unlink()
