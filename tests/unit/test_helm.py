"""infra/helm/values.yaml through the official Airflow chart (1.22.0, ../shared/vendor/) and our
own manifests (infra/k8s/): `helm lint` and `helm template` by Helm's own Go code (the
helm-python-sdk wheel binds Helm's SDK; no helm binary is packaged on PyPI for Linux), every
object validated against the Kubernetes 1.33 API schemas (kubernetes-validate, which bundles
them), then what retrainer needs of the rendered pods. No cluster runs here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrainer.config.resources import MLFLOW_DEFAULT_ADMIN_PASSWORD
from retrainer.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = Path(
    os.environ.get("RETRAINER_AIRFLOW_CHART", ROOT.parent / "shared/vendor/airflow-1.22.0.tgz")
)
VALUES = yaml.safe_load((ROOT / "infra/helm/values.yaml").read_text())
K8S = ROOT / "infra/k8s"
KUBE_VERSION = "1.33.0"
AIRFLOW_COMPONENTS = {  # workload -> its Airflow container
    "retrainer-scheduler": "scheduler",
    "retrainer-dag-processor": "dag-processor",
    "retrainer-triggerer": "triggerer",
    "retrainer-worker": "worker",
    "retrainer-api-server": "api-server",
    "retrainer-run-airflow-migrations": "run-airflow-migrations",
}
DEFAULT_PASSWORDS = {"admin", "postgres", "airflow", "password", MLFLOW_DEFAULT_ADMIN_PASSWORD}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHART.exists():
        pytest.fail(
            f"the official Airflow chart is not at {CHART}: it is vendored in shared/vendor/ "
            "beside the repository (or set RETRAINER_AIRFLOW_CHART to the .tgz)"
        )
    import helm_python

    out = tmp_path_factory.mktemp("chart")
    helm_python.expand(out, CHART)
    return out / "airflow"


@pytest.fixture(scope="module")
def rendered(chart_dir: Path) -> list[dict[str, Any]]:
    import helm_python

    manifests = helm_python.Chart.load(chart_dir).render(
        VALUES, name="retrainer", namespace="retrainer", is_install=True
    )
    docs = [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    assert docs, "the chart rendered nothing"
    return docs


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_helm_lint_is_clean(chart_dir: Path) -> None:
    import helm_python

    report = helm_python.lint(
        chart_dir, VALUES, namespace="retrainer", kube_version=f"v{KUBE_VERSION}", strict=True
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


def test_airflow_3_3_is_set_explicitly_with_non_deprecated_keys() -> None:
    assert VALUES["airflowVersion"] == "3.3.2"
    assert VALUES["defaultAirflowTag"] == "3.3.2"
    deprecated = {"replicas", "resources", "args", "command", "persistence"}
    assert not deprecated & set(VALUES["workers"]) - {"celery"}, "use workers.celery.*"
    assert VALUES["workers"]["celery"]["replicas"] >= 1


def test_every_object_is_valid_for_the_kubernetes_api(rendered: list[dict[str, Any]]) -> None:
    import kubernetes_validate

    ours = [d for f in sorted(K8S.glob("*.yaml")) for d in load_all(f)]
    kinds: dict[str, int] = {}
    for doc in rendered + ours:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(
                f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            ) from None
        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
    assert kinds["Deployment"] >= 6 and kinds["StatefulSet"] == 2 and kinds["Secret"] == 7, kinds


def test_our_image_and_command_on_every_airflow_component(
    rendered: list[dict[str, Any]],
) -> None:
    found = workloads(rendered)
    image = f"{VALUES['images']['airflow']['repository']}:{VALUES['images']['airflow']['tag']}"
    for workload, name in AIRFLOW_COMPONENTS.items():
        assert workload in found, f"{workload} not rendered: {sorted(found)}"
        c = container(found[workload], name)
        assert c["image"] == image, (workload, c["image"])
        assert c.get("command") is None, "the image's entrypoint must run (it execs retrainer)"
        assert c["args"][0] == "retrainer", (workload, c["args"])
    assert "retrainer-create-user" not in " ".join(found), "no admin/admin user job"


def secret_data() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["stringData"] for d in load_all(K8S / "secrets.example.yaml")}


def pod_environment(doc: dict[str, Any], name: str, docs: list[dict[str, Any]]) -> dict[str, str]:
    """What the container's process sees: env values, secretKeyRefs and envFrom, with the
    example secrets and our config maps standing in for the cluster's."""
    secrets = secret_data()
    config_maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"
    }
    c = container(doc, name)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "secretRef" in source:
            env.update(secrets[source["secretRef"]["name"]])
        else:
            env.update(config_maps[source["configMapRef"]["name"]])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"{name}: secret {ref['name']} is in no example"
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def test_every_pod_gets_the_settings_it_needs(rendered: list[dict[str, Any]]) -> None:
    ours = [d for f in sorted(K8S.glob("*.yaml")) for d in load_all(f)]
    docs = rendered + ours
    pods = {**AIRFLOW_COMPONENTS, "retrainer-mlflow": "mlflow", "retrainer-serving": "serving"}
    found = workloads(docs)
    for workload, name in pods.items():
        env = pod_environment(found[workload], name, docs)
        settings = Settings.from_env(env)
        assert settings.profile == "production", workload
        resources = settings.resources  # raises ConfigError naming any missing variable
        assert resources.executor == "CeleryExecutor", workload
        assert settings.mlflow_tracking_uri == "http://retrainer-mlflow:5000", workload
        assert env.get("RETRAINER_API_TOKEN") and env.get("AWS_SECRET_ACCESS_KEY"), workload
        if name in AIRFLOW_COMPONENTS.values():
            assert env["AIRFLOW__API__SECRET_KEY"], f"{workload}: no shared api secret key"
            assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+"), workload


def test_mlflow_accepts_the_in_cluster_host_name() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    settings = next(d for d in load_all(K8S / "retrainer.yaml") if d["kind"] == "ConfigMap")
    allowed = [h.strip() for h in settings["data"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    host = settings["data"]["RETRAINER_MLFLOW_TRACKING_URI"].split("//")[1]
    assert is_allowed_host_header(allowed, host), (host, allowed)
    assert not is_allowed_host_header(allowed, "evil.example:5000")


def test_no_default_password_anywhere(rendered: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(rendered)
    assert "postgres:postgres@" not in text and "admin:admin" not in text
    for doc in rendered:
        if doc["kind"] == "Secret":
            raise AssertionError(
                f"the chart rendered secret {doc['metadata']['name']}: ours are made by hand"
            )
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for var in c.get("env", []):
                    if any(k in var["name"] for k in ("PASSWORD", "SECRET", "TOKEN", "FERNET")):
                        assert "value" not in var, f"{var['name']} set in plain text"
    for values in secret_data().values():
        for key, value in values.items():
            assert value not in DEFAULT_PASSWORDS, key
            if "PASSWORD" in key or "SECRET" in key or "TOKEN" in key:
                assert value.startswith("REPLACE-"), key


def test_database_and_celery_urls_work_with_the_drivers_in_the_lock() -> None:
    import celery.app.backends
    from sqlalchemy.engine import make_url

    lock = (ROOT / "infra/requirements-runtime.lock").read_text()
    assert "psycopg2-binary==" in lock and "\npsycopg==" not in lock  # hence +psycopg2
    secrets = secret_data()
    urls = {
        "metadata": secrets["retrainer-metadata"]["connection"],
        **{k: v for k, v in secrets["retrainer-env"].items() if k.endswith("DATABASE_URL")},
    }
    for name, url in urls.items():
        assert make_url(url).get_dialect().driver == "psycopg2", name
    for backend in (
        secrets["retrainer-result-backend"]["connection"],
        secrets["retrainer-env"]["RETRAINER_CELERY_RESULT_BACKEND"],
    ):
        cls, url = celery.app.backends.by_url(backend)
        assert cls.__name__ == "DatabaseBackend", backend
        assert make_url(url).get_dialect().driver == "psycopg2"
    broker = secrets["retrainer-broker-url"]["connection"]
    assert broker == secrets["retrainer-env"]["RETRAINER_CELERY_BROKER_URL"]
    assert make_url(broker).drivername == "redis"


def test_statsd_exporter_gets_our_mapping() -> None:
    ours = yaml.safe_load((ROOT / "infra/prometheus/statsd-mapping.yml").read_text())
    assert VALUES["statsd"]["overrideMappings"] == ours["mappings"]


def test_summary_of_the_rendered_manifests(rendered: list[dict[str, Any]]) -> None:
    """Objects, images and commands, printed for the record (pytest -s)."""
    ours = [d for f in sorted(K8S.glob("*.yaml")) for d in load_all(f)]
    lines = []
    for doc in rendered + ours:
        line = f"{doc['kind']:<15} {doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            c = doc["spec"]["template"]["spec"]["containers"][0]
            line += f"  {c['image']}  {' '.join(c.get('args') or [])}"
        lines.append(line)
    print("\n" + "\n".join(lines))
    assert len(lines) > 20
