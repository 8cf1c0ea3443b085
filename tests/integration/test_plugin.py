"""The Airflow plugin in Airflow's own api-server app (in-process): the Models page and its data
answer 401 without a login and list the models with their decisions with one; task extra links
point at the MLflow run, version and reports the tasks returned; MLflow carries the experiment
kind and a description on every version."""

from pathlib import Path
from urllib.parse import quote

import pytest

import testenv
from retrainer import constants as C
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "plug_bc"


@pytest.fixture(scope="module")
def retrained(airflow_db):
    """One real retrain of plug_bc through dag.test(): the gate, the registration, the XComs."""
    from retrainer.orchestration.retrain import retrain_dag
    from retrainer.spec import load_spec

    spec = load_spec(testenv.MODELS / f"{MODEL}.yaml")
    dr = retrain_dag(spec, testenv.MODELS / f"{MODEL}.yaml").test(run_conf={"reason": "plugin"})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert states["register_candidate"] == "success", states
    return spec, dr


@pytest.fixture(scope="module")
def api(airflow_db):
    """Airflow's api-server app, with the plugins folder of this checkout, and a logged-in token."""
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    from retrainer.config.secrets import airflow_credentials
    from retrainer.orchestration.plugin.data import clear_cache

    clear_cache()
    client = TestClient(create_app("core"))
    user, password = airflow_credentials(get_settings())
    resp = client.post("/auth/token", json={"username": user, "password": password})
    assert resp.status_code in (200, 201), resp.text
    return client, {"Authorization": f"Bearer {resp.json()['access_token']}"}


@pytest.mark.parametrize("path", ["/retrainer/models", "/retrainer/api/models"])
def test_every_plugin_route_needs_a_login(api, path):
    client, _ = api
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert client.get(path, cookies={"_token": "forged"}).status_code == 401


def test_models_page_and_data(api, retrained):
    from retrainer.orchestration.plugin.data import clear_cache

    client, auth = api
    clear_cache()
    page = client.get("/retrainer/models", headers=auth)
    assert page.status_code == 200 and "<h1>Models</h1>" in page.text
    data = client.get("/retrainer/api/models", headers=auth).json()
    rows = {m["name"]: m for m in data["models"]}
    assert set(rows) >= {MODEL, "credit_it", "credit_mon"}  # every spec, registered or not
    row = rows[MODEL]
    assert row["aliases"]["champion"]["version"] == "1"
    assert row["gate"]["decision"] == "passed"
    assert row["gate"]["dag_run_id"] == retrained[1].run_id
    run = quote(retrained[1].run_id, safe="")
    assert row["gate"]["airflow_url"] == f"dags/{MODEL}_retrain/runs/{run}"
    assert row["gate"]["mlflow_url"].startswith(get_settings().mlflow_url + "/#/experiments/")
    assert row["can_act"] is True and row["dags"]["deploy"] == f"{MODEL}_deploy"
    only = client.get(f"/retrainer/api/models?model={MODEL}", headers=auth).json()
    assert [m["name"] for m in only["models"]] == [MODEL]


def test_summary_tags_of_any_shape_are_shown_safely_and_never_break_the_page(api, retrained):
    """Anyone who may write MLflow tags writes the summaries the page reads: a link in a tag is
    never used (a `javascript:` URL or an attribute break-out ran script in every viewer's
    browser), a NaN metric (a one-class test split) no longer makes the data route a 500 for
    everyone, and values of the wrong shape are dropped."""
    from retrainer.orchestration.plugin.data import clear_cache
    from retrainer.stores.overview import SUMMARY_GATE, SUMMARY_LEDGER, SUMMARY_MONITOR
    from retrainer.stores.tracking import mlflow_client

    client, auth = api
    mlflow = mlflow_client(get_settings())
    saved = mlflow.get_registered_model(MODEL).tags
    hostile = {
        SUMMARY_GATE: '{"decision":"promote","candidate":NaN,"champion":Infinity,'
        '"airflow_url":"x\\" onmouseover=\\"alert(1)","mlflow_url":"javascript:alert(1)",'
        '"dag_id":"d/../x","dag_run_id":7,"reasons":"not a list","time":"yesterday"}',
        SUMMARY_MONITOR: '{"decision":"ok","psi":{"Age":"high","Amount":0.2},'
        '"estimate":"not a dict","mlflow_run_id":"r\\"><script>"}',
        SUMMARY_LEDGER: '["a string", {"action":"promote","to":"2","airflow_url":"javascript:x"}]',
    }
    try:
        for key, text in hostile.items():
            mlflow.set_registered_model_tag(MODEL, key, text)
        clear_cache()
        resp = client.get(f"/retrainer/api/models?model={MODEL}", headers=auth)
        assert resp.status_code == 200, resp.text
        (row,) = resp.json()["models"]
    finally:
        for key in hostile:
            if key in saved:
                mlflow.set_registered_model_tag(MODEL, key, saved[key])
            else:
                mlflow.delete_registered_model_tag(MODEL, key)
        clear_cache()
    gate, monitor = row["gate"], row["monitor"]
    assert gate["candidate"] is None and gate["champion"] is None and gate["time"] is None
    assert gate["airflow_url"] == "dags/d%2F..%2Fx/runs/7" and "mlflow_url" not in gate
    assert gate["reasons"] == []
    assert monitor["psi"] == {"Age": None, "Amount": 0.2} and "estimate" not in monitor
    assert monitor["mlflow_url"].endswith("/#/runs/r%22%3E%3Cscript%3E" + C.MLFLOW_UI_TRAINING)
    assert row["ledger"] == [{"action": "promote", "to": "2"}]
    assert "javascript:" not in resp.text


def test_plugin_is_listed_with_its_views(api):
    client, auth = api
    plugins = client.get("/api/v2/plugins", headers=auth).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "retrainer")
    assert {v["name"] for v in ours["external_views"]} == {"Models", "Model"}
    assert {a["url_prefix"] for a in ours["fastapi_apps"]} == {"/retrainer"}
    # Airflow lists each link as "<its class's qualified name object>".
    links = "retrainer.orchestration.plugin.links"
    assert sorted(ours["global_operator_extra_links"]) == sorted(
        f"<{links}.{cls} object>"
        for cls in ("MLflowRunLink", "ModelVersionLink", "ValidationReportLink", "DriftReportLink")
    )


def test_task_links_point_at_what_the_task_recorded(api, retrained):
    client, auth = api
    spec, dr = retrained
    mlflow = get_settings().mlflow_url

    def links(task_id):
        url = (
            f"/api/v2/dags/{spec.retrain_dag_id}/dagRuns/{dr.run_id}/taskInstances/{task_id}/links"
        )
        resp = client.get(url, headers=auth)
        assert resp.status_code == 200, resp.text
        return resp.json()["extra_links"]

    gate = links("gate")
    assert gate["MLflow run"].startswith(f"{mlflow}/#/experiments/")
    validated = links("validate_data")
    assert validated["Validation report"].endswith(
        f"/artifactPath/{C.ARTIFACT_VALIDATION_HTML}{C.MLFLOW_UI_TRAINING}"
    )
    assert validated["Drift report"] is None
    registered = links("register_candidate")
    assert registered["Model version"] == f"{mlflow}/#/models/{MODEL}/versions/1" + (
        C.MLFLOW_UI_TRAINING
    )


def test_mlflow_opens_on_model_training_and_versions_are_described(retrained):
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(get_settings())
    spec, dr = retrained
    exp = client.get_experiment_by_name(spec.experiment_name)
    assert exp.tags[C.TAG_EXPERIMENT_KIND] == C.EXPERIMENT_KIND_TRAINING
    text = client.get_model_version(MODEL, "1").description
    assert "Gate passed" in text and dr.run_id in text and "validated rows" in text
    assert "no champion to compare with" in text


def test_a_dangling_spec_link_and_an_unreachable_registry_are_not_500s(api, tmp_path, monkeypatch):
    from retrainer.orchestration.plugin import data

    client, auth = api
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    assert data.load_specs(tmp_path) == ([], [])

    def down(settings, names):
        raise ConnectionError("MLflow is down")

    data.clear_cache()
    monkeypatch.setattr(data, "_read", down)
    resp = client.get("/retrainer/api/models", headers=auth)
    assert resp.status_code == 503 and "could not be read (ConnectionError)" in resp.text
    data.clear_cache()
