"""One isolated state folder per test session, set in the environment before Airflow is imported.

Imported by the conftest of every test folder that touches Airflow or MLflow, so that running any
single folder gets the same isolation. Nothing here starts a service.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import yaml

from retrainer.config.environment import process_environment
from retrainer.config.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(tempfile.mkdtemp(prefix="retrainer-tests-"))
MODELS = STATE / "models"


def copy_spec(
    source: str,
    name: str,
    approval: str | None = None,
    no_nulls: tuple[str, ...] = (),
    monitoring: dict | None = None,
    alerts: list[dict] | None = None,
    rollout: dict | None = None,
) -> Path:
    """A shipped spec under another model name, its data path made absolute; `no_nulls`
    columns get max_null_fraction 0 (their signature input becomes required); `monitoring`
    keys override the spec's."""
    raw = yaml.safe_load((ROOT / "models" / f"{source}.yaml").read_text())
    raw["name"] = name
    raw["monitoring"] = {**raw.get("monitoring", {}), **(monitoring or {})}
    for col in no_nulls:
        raw["validation"]["columns"].setdefault(col, {})["max_null_fraction"] = 0.0
    if approval:
        raw.setdefault("deployment", {})["approval"] = approval
    if alerts:
        raw["alerts"] = alerts
    # The shipped demo spec rolls out through shadow and canary; test models deploy directly
    # unless a test asks for a rollout.
    raw.setdefault("deployment", {}).pop("rollout", None)
    if rollout:
        raw["deployment"]["rollout"] = rollout
    source = ROOT / raw["data"]["train"]
    if source.is_dir():  # a training folder: the session's own copy, so tests can land batches
        data = STATE / "data" / name
        shutil.copytree(source, data, ignore=shutil.ignore_patterns("landed-*"))
        source = data
    raw["data"]["train"] = str(source)
    path = MODELS / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# The session's own models folder: dag.test() syncs the DAGs folder, so every DAG a test runs must
# exist there; tests then run variants of these (a weaker model, another data path) in-process.
MODELS.mkdir()
copy_spec("credit_default", "credit_it")
copy_spec("diabetes_progression", "diabetes_progression")
copy_spec("credit_default", "credit_srv", approval="auto", no_nulls=("Age",))
copy_spec("credit_default", "credit_appr", approval="manual")
copy_spec("credit_default", "credit_mon")
copy_spec("credit_default", "credit_copy")
copy_spec("credit_default", "credit_nochamp")
copy_spec("credit_default", "credit_gate")
copy_spec("credit_default", "credit_repro")
copy_spec("credit_default", "credit_lineage")
copy_spec("credit_default", "credit_roll")
copy_spec(
    "credit_default",
    "credit_rdag",
    approval="auto",
    rollout={
        "strategy": "shadow_canary",
        "shadow_fraction": 1.0,
        "min_rows": 150,
        "max_duration": "60s",
        "check_interval": "2s",
        "canary_steps": [0.5, 1.0],
        "bake_time": "3s",
    },
)
copy_spec("diabetes_progression", "diabetes_repro")
copy_spec(
    "credit_default",
    "credit_cap",
    monitoring={"cooldown": "1s", "max_retrains": {"count": 1, "per": "7d"}},
)
copy_spec(  # a PSI limit low enough that sampling noise passes it: significance decides
    "credit_default", "credit_sig", monitoring={"psi_warn": 0.02, "psi_retrain": 0.04}
)
copy_spec(  # a drop limit so lenient that a trusted estimate holds any drift retrain back
    "credit_default", "credit_est", monitoring={"max_estimated_drop": 0.5, "min_rows": 100}
)
copy_spec(  # a window cap small enough for a test's traffic to pass it
    "credit_default", "credit_rows", monitoring={"max_rows": 250, "min_rows": 100}
)
copy_spec("breast_cancer", "plug_bc")
copy_spec(
    "breast_cancer",
    "plug_alert",
    alerts=[
        {"conn_id": "alert_mail"},
        {
            "conn_id": "alert_hook",
            "events": [
                "monitor_retrain",
                "monitor_schema_changed",
                "gate_rejected",
                "deploy_rolled_back",
                "rollout_stopped",
                "task_failed",
            ],
        },
        {"conn_id": "alert_apprise", "events": ["monitor_warn", "rollout_stopped"]},
    ],
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SETTINGS = Settings(home=STATE / "state", models_dir=MODELS, serving_port=free_port())

os.environ.update(process_environment(SETTINGS))
# Quiet, deterministic task runs under dag.test(); no example DAGs.
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
