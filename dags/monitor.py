"""Airflow DAG file (retrainer): `<model>_monitor` for every spec in RETRAINER_MODELS_DIR (wiring only; see src/)."""

# "Airflow" and "DAG" in this docstring let safe-mode discovery parse the file (DAG_DISCOVERY_SAFE_MODE).
from retrainer.orchestration.dags import build_dags

globals().update(build_dags("monitor"))
