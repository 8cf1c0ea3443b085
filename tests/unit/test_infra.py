"""docker-compose.yml, infra/ and .env.example, checked statically (no Docker engine here):
they parse, agree with each other, and with the settings and the serving API's metrics."""

import json
import re
from pathlib import Path

import pytest
import yaml

from retrainer.config.resources import MLFLOW_DEFAULT_ADMIN_PASSWORD
from retrainer.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
ONE_SHOT = {"minio-init", "airflow-init"}


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def substitute(value: str, env: dict[str, str]) -> str:
    return re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], value)


def test_the_topology_is_complete():
    expected = {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "mlflow",
        "serving",
        "prometheus",
        "grafana",
        "statsd-exporter",
    }
    assert expected <= set(SERVICES)
    assert SERVICES["airflow-worker"]["command"] == ["retrainer", "airflow", "celery", "worker"]


def test_every_variable_is_defined_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    missing = used - set(env_example())
    assert not missing, f"referenced in docker-compose.yml, not defined in .env.example: {missing}"


def test_images_are_pinned_and_services_have_healthchecks():
    env = env_example()
    for name, svc in SERVICES.items():
        image = substitute(svc["image"], env)
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        if name not in ONE_SHOT:
            assert "healthcheck" in svc, f"{name} has no healthcheck"


def test_dependencies_volumes_and_ports_are_consistent():
    declared = set(COMPOSE["volumes"])
    for name, svc in SERVICES.items():
        for dep in svc.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in declared, f"{name} uses undeclared volume {src}"
    # Container ports are what the apps listen on.
    assert SERVICES["airflow-apiserver"]["ports"] == ["${AIRFLOW_PORT}:8080"]
    assert SERVICES["mlflow"]["ports"] == ["${MLFLOW_PORT}:5000"]
    assert SERVICES["serving"]["ports"] == ["${SERVING_PORT}:8000"]
    assert "8000" in SERVICES["serving"]["command"]


def test_compose_environment_is_a_valid_production_profile():
    env = {k: substitute(str(v), env_example()) for k, v in COMPOSE["x-retrainer-env"].items()}
    settings = Settings.from_env(env)
    res = settings.resources
    assert settings.profile == "production" and res.executor == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTOR"] == res.executor
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == res.airflow_database_url
    assert env["AIRFLOW__CELERY__BROKER_URL"] == env["RETRAINER_CELERY_BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == env["RETRAINER_CELERY_RESULT_BACKEND"]
    assert res.tracking_uri == "http://mlflow:5000" and res.mlflow_auth
    assert settings.serving_url == "http://serving:8000"
    assert res.work_root.startswith("s3://") and res.inference_log_root.startswith("s3://")
    # Every database the URLs name is created by the init script.
    init = (ROOT / "infra" / "postgres" / "init.sql").read_text()
    for key in (
        "RETRAINER_AIRFLOW_DATABASE_URL",
        "RETRAINER_MLFLOW_DATABASE_URL",
        "RETRAINER_MLFLOW_AUTH_DATABASE_URL",
    ):
        assert f"CREATE DATABASE {env[key].rsplit('/', 1)[1]};" in init


def test_production_refuses_missing_config_and_the_default_mlflow_password(tmp_path):
    from retrainer.errors import ConfigError

    with pytest.raises(ConfigError, match="RETRAINER_AIRFLOW_DATABASE_URL"):
        _ = Settings(profile="production", home=tmp_path).resources
    env = {k: substitute(str(v), env_example()) for k, v in COMPOSE["x-retrainer-env"].items()}
    env["RETRAINER_MLFLOW_ADMIN_PASSWORD"] = MLFLOW_DEFAULT_ADMIN_PASSWORD
    env["RETRAINER_HOME"] = str(tmp_path)
    with pytest.raises(ConfigError, match="published default"):
        _ = Settings.from_env(env).resources


def test_the_image_installs_the_same_pinned_set_as_make():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements.lock" in dockerfile and "-r requirements.lock" in makefile
    base = re.search(r"^FROM apache/airflow:(\S+)-python3\.11$", dockerfile, re.M)
    lock = (ROOT / "requirements.lock").read_text()
    pinned = re.search(r"^apache-airflow==(\S+)", lock, re.M)
    assert base and pinned and base.group(1) == pinned.group(1)


def test_dashboards_and_scrapes_name_real_metrics():
    serving = (ROOT / "src" / "retrainer" / "serving").rglob("*.py")
    exported = set(re.findall(r'"(retrainer_[a-z_]+)"', "".join(p.read_text() for p in serving)))
    dashboard = json.loads(
        (ROOT / "infra" / "grafana" / "dashboards" / "retrainer.json").read_text()
    )
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in (
        "Request rate by model",
        "Latency p50 / p99",
        "Errors by reason",
        "Served model version",
        "PSI per feature (last check)",
        "Retrains triggered by drift",
    ):
        assert needed in titles
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(retrainer_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert base in exported, f"{panel['title']}: {name} is not exported by serving"
    prom = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert "serving:8000" in targets and "statsd-exporter:9102" in targets
    helm = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    assert (
        helm["executor"] == "CeleryExecutor"
        and helm["config"]["logging"]["remote_logging"] == "True"
    )
    assert helm["postgresql"]["enabled"] is False and helm["images"]["airflow"]["tag"]
