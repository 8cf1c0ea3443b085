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
ONE_SHOT = {"airflow-init"}


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


def pins(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M))


def test_the_image_installs_the_runtime_lock_without_dev_tools():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert "-r requirements-runtime.lock" in dockerfile
    # What the base image holds constrains the install, and pip check must pass.
    assert "-c /tmp/airflow-image.txt" in dockerfile and "pip check" in dockerfile
    base = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\S+)-python3\.11$", dockerfile, re.M)
    runtime = pins((ROOT / "infra" / "requirements-runtime.lock").read_text())
    dev = pins((ROOT / "requirements.lock").read_text())
    assert base and base.group(1) == runtime["apache-airflow"]
    # The same versions as `make install`, minus the dev tools.
    assert all(dev[name] == version for name, version in runtime.items())
    assert not {"pytest", "moto", "ruff", "mypy", "helm-python-sdk"} & set(runtime)
    declared = re.findall(
        r'^\s+"([A-Za-z0-9_.\-\[\]]+)==', (ROOT / "pyproject.toml").read_text(), re.M
    )
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev_tools = {
        re.split(r"[=<>\[ ]", d)[0].lower() for d in project["optional-dependencies"]["dev"]
    }
    runtime_direct = {re.sub(r"\[.*\]", "", d).lower() for d in declared} - dev_tools
    assert runtime_direct <= set(runtime), runtime_direct - set(runtime)


def test_image_runs_retrainer_commands_directly_and_owns_its_home():
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    entrypoint = (ROOT / "infra" / "entrypoint.sh").read_text()
    # The official entrypoint would run `retrainer init` as `airflow retrainer init`.
    assert 'exec "$@"' in entrypoint and "exec /entrypoint" in entrypoint
    assert "chown -R airflow:0 /opt/retrainer" in dockerfile
    assert dockerfile.index("chown -R airflow:0") < dockerfile.index("USER airflow")
    for name in ("airflow-init", "airflow-scheduler", "mlflow", "serving"):
        assert "retrainer-state:/opt/retrainer/state" in SERVICES[name]["volumes"], name
    env = COMPOSE["x-retrainer-env"]
    assert env["AIRFLOW_HOME"] == env["RETRAINER_HOME"] + "/airflow"
    assert env["AIRFLOW__API__SECRET_KEY"] == "${AIRFLOW_API_SECRET_KEY}"
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"].startswith("mlflow,mlflow:*")


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
    serving_job = next(j for j in prom["scrape_configs"] if j["job_name"] == "retrainer-serving")
    token_file = serving_job["authorization"]["credentials_file"]
    assert token_file in " ".join(SERVICES["prometheus"]["entrypoint"])
    helm = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    assert helm["executor"] == "CeleryExecutor" and helm["postgresql"]["enabled"] is False
    assert helm["images"]["airflow"]["tag"]


def test_counters_start_at_zero_for_every_monitor_decision():
    from retrainer.serving.metrics import MONITOR_DECISIONS, Metrics
    from retrainer.steps.monitor import decision as monitoring

    decisions = {
        monitoring.OK, monitoring.WARN, monitoring.RETRAIN, monitoring.INSUFFICIENT,
        monitoring.SCHEMA_CHANGED, monitoring.NO_CHAMPION,
    }  # fmt: skip
    assert set(MONITOR_DECISIONS) == decisions
    metrics = Metrics(["credit_default"])
    retrains = metrics.registry.get_sample_value(
        "retrainer_retrains_triggered_total", {"model": "credit_default"}
    )
    assert retrains == 0.0  # from start-up, before any version is installed
    metrics.start_at_zero("credit_default")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    for decision in decisions:
        key = (
            "retrainer_monitor_checks_total",
            (("decision", decision), ("model", "credit_default")),
        )
        assert samples[key] == 0.0
    assert samples[("retrainer_retrains_triggered_total", (("model", "credit_default"),))] == 0.0
