"""retrainer: `<model>_retrain` for every spec in RETRAINER_MODELS_DIR (wiring only; see src/)."""

from retrainer.orchestration.dags import build_dags

globals().update(build_dags("retrain"))
