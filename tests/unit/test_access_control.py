"""Spec `access_control`: validation with clear errors, the FAB roles as the DAGs'
`access_control`, and the team bundles of Airflow's multi-team mode."""

import json
from pathlib import Path

import pytest
import yaml

from retrainer.errors import SpecError
from retrainer.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]


def base(**access) -> dict:
    raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    if access:
        raw["access_control"] = access
    return raw


def test_no_access_control_means_every_user():
    spec = parse_spec(base())
    assert spec.access_control is None and spec.team is None


def test_roles_become_the_dags_access_control():
    spec = parse_spec(base(team="fraud", roles={"fraud_viewers": "read", "fraud_ops": "edit"}))
    assert spec.team == "fraud"
    assert spec.access_control.dag_access_control() == {
        "fraud_viewers": {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}},
        "fraud_ops": {
            "DAGs": {"can_read", "can_edit"},
            "DAG Runs": {"can_read", "can_create", "can_edit"},
        },
    }
    assert parse_spec(base(team="fraud")).access_control.dag_access_control() is None


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        ({}, "access_control: give a `team` (multi-team mode) or `roles` (FAB auth manager)"),
        ({"team": "Fraud Team"}, "access_control.team: expected string should match pattern"),
        (
            {"roles": {"ops": "write"}},
            "access_control.roles.ops: expected input should be 'read' or 'edit'",
        ),
        ({"roles": {" ops": "read"}}, "roles: ' ops' is not a role name"),
        ({"team": "fraud", "rols": {}}, "access_control.rols: unknown key"),
    ],
)
def test_bad_access_control_names_key_expected_and_found(access, expected):
    raw = base()
    raw["access_control"] = access
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "models/credit_default.yaml")
    assert str(exc.value).startswith("models/credit_default.yaml: ")
    assert expected in str(exc.value)


def write_specs(folder: Path) -> None:
    folder.mkdir()
    for name, team in (("open_model", None), ("fraud_model", "fraud"), ("credit_model", "credit")):
        raw = base(team=team, roles={f"{team}_ops": "edit"}) if team else base()
        raw["name"] = name
        raw["data"]["train"] = str(ROOT / raw["data"]["train"])
        raw["deployment"].pop("rollout", None)  # direct: no <model>_rollout_control DAG
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(raw))


def test_each_bundle_builds_its_teams_dags(tmp_path, monkeypatch):
    from retrainer.orchestration.dags import build_dags
    from retrainer.orchestration.teams import spec_teams

    write_specs(tmp_path / "models")
    assert spec_teams(tmp_path / "models") == ["credit", "fraud"]
    # Not in multi-team mode: one bundle, every model (the team is not enforced).
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "False")
    assert set(build_dags("deploy", tmp_path / "models")) == {
        "open_model_deploy",
        "fraud_model_deploy",
        "credit_model_deploy",
    }
    monkeypatch.setenv("AIRFLOW__CORE__MULTI_TEAM", "True")
    assert set(build_dags("deploy", tmp_path / "models")) == {"open_model_deploy"}
    fraud = build_dags("retrain", tmp_path / "models", team="fraud")
    assert set(fraud) == {"fraud_model_retrain"}
    assert "team:fraud" in fraud["fraud_model_retrain"].tags
    assert fraud["fraud_model_retrain"].access_control == {
        "fraud_ops": {
            "DAGs": {"can_read", "can_edit"},
            "DAG Runs": {"can_read", "can_create", "can_edit"},
        }
    }


def test_team_bundles_and_their_configuration(tmp_path):
    from retrainer.orchestration.teams import team_environment, write_team_bundles

    assert team_environment([], tmp_path) == {}
    env = team_environment(["fraud"], tmp_path)
    assert env["AIRFLOW__CORE__MULTI_TEAM"] == "True"
    bundles = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert [(b["name"], b.get("team_name")) for b in bundles] == [
        ("dags-folder", None),
        ("team-fraud", "fraud"),
    ]
    assert bundles[1]["kwargs"]["path"] == str(tmp_path / "fraud")
    write_team_bundles(["fraud"], tmp_path)
    text = (tmp_path / "fraud" / "deploy.py").read_text()
    assert 'build_dags("deploy", team="fraud")' in text and "Airflow DAG file" in text
    compile(text, "deploy.py", "exec")
