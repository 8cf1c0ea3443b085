"""Airflow DAG file (retrainer): `<model>_deploy` for every spec in RETRAINER_MODELS_DIR (wiring only; see src/)."""

# "Airflow" and "DAG" in this docstring let safe-mode discovery parse the file (DAG_DISCOVERY_SAFE_MODE).
# Named here so the dag-processor pre-imports it once, before it forks each parse (Airflow's
# parsing_pre_import_modules): specs with `approval: manual` use it.
from airflow.providers.standard.operators.hitl import ApprovalOperator  # noqa: F401

from retrainer.orchestration.dags import build_dags

globals().update(build_dags("deploy"))
