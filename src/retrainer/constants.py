"""Names shared across modules: aliases, tag keys, artifact paths. One place, so they never drift."""

from __future__ import annotations

ALIAS_CHAMPION = "champion"
ALIAS_CHALLENGER = "challenger"
ALIAS_PREVIOUS = "previous"

# Tags on MLflow runs and model versions.
TAG_DAG_ID = "airflow.dag_id"
TAG_DAG_RUN_ID = "airflow.run_id"
TAG_TASK_ID = "airflow.task_id"
TAG_TRIGGERED_BY = "retrainer.triggered_by"
TAG_REASON = "retrainer.reason"
TAG_MODEL = "retrainer.model"
TAG_DATA_SOURCE = "retrainer.data_source"
TAG_DATA_DIGEST = "retrainer.data_digest"
TAG_VALIDATION = "retrainer.validation"
TAG_GATE_DECISION = "retrainer.gate.decision"
TAG_GATE_REASONS = "retrainer.gate.reasons"
TAG_STAGE = "retrainer.stage"
TAG_MODEL_VERSION = "retrainer.model_version"  # on a retrain run: the version it registered

# Artifacts inside a retrain run.
ARTIFACT_VALIDATION_JSON = "validation/result.json"
ARTIFACT_VALIDATION_HTML = "validation/report.html"
ARTIFACT_GATE_JSON = "gate/decision.json"
ARTIFACT_SPEC = "spec/model_spec.yaml"
MODEL_ARTIFACT_NAME = "model"

# Who may be named in a spec's model.estimator: classes from these packages (and their
# submodules), plus any listed, comma-separated, in this variable (e.g. "xgboost,lightgbm").
DEFAULT_ESTIMATOR_MODULES = ("sklearn",)
ESTIMATOR_MODULES_ENV = "RETRAINER_ESTIMATOR_MODULES"
# The methods a class needs to be trained and served as a scikit-learn estimator.
ESTIMATOR_API = ("fit", "predict", "get_params")

# A spec file is small, hand-written YAML: loading refuses anything that is not.
SPEC_MAX_BYTES = 256 * 1024
SPEC_MAX_ALIASES = 100  # alias uses (*name) in one file
SPEC_MAX_NODES = 100_000  # scalars and collections once every alias is expanded
SPEC_MAX_DEPTH = 32  # nested collections

# Types skops may load from these packages without listing each one by hand.
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.")

# The promotion ledger: one MLflow run per promotion or rollback, in its own experiment.
LEDGER_EXPERIMENT = "retrainer/ledger"
ARTIFACT_SMOKE_ROWS = "smoke/heldback.json"
TAG_TEST_URI = "retrainer.test_uri"

# Monitoring: the reference profile logged with every trained model, and each check's run.
ARTIFACT_REFERENCE_PROFILE = "monitoring/reference_profile.json"
ARTIFACT_REFERENCE_SAMPLE = "monitoring/reference_sample.parquet"
ARTIFACT_MONITOR_DECISION = "drift/decision.json"
ARTIFACT_MONITOR_PSI = "drift/psi.json"
ARTIFACT_MONITOR_REPORT = "drift/drift_report.html"
TAG_WINDOW_START = "retrainer.monitor.window_start"
TAG_WINDOW_END = "retrainer.monitor.window_end"
TAG_WINDOW_CONSUMED = "retrainer.monitor.window_consumed"
TAG_MONITOR_DECISION = "retrainer.monitor.decision"
TAG_MONITOR_FEATURES = "retrainer.monitor.features"
TAG_MONITOR_REASONS = "retrainer.monitor.reasons"
TAG_MONITOR_DRIFTED = (
    "retrainer.monitor.drifted"  # PSI and significance, for monitoring.consecutive
)
TAG_MONITOR_ACTION = "retrainer.monitor.action"
TAG_MONITOR_ACTION_DETAIL = "retrainer.monitor.action_detail"
TAG_MONITOR_RETRAIN_RUN = "retrainer.monitor.retrain_run_id"
TAG_MONITOR_REPORT = "retrainer.monitor.report"
TAG_CHAMPION_VERSION = "retrainer.champion_version"
REFERENCE_SAMPLE_ROWS = 5000
ARTIFACT_TRIGGER = "trigger/conf.json"
TAG_TRIGGER_ORIGIN = "retrainer.trigger.origin"

# MLflow's UI opens an experiment in its GenAI view unless it carries this kind.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
# Appended to MLflow UI links: its side bar opens in "Model training" mode, not GenAI.
MLFLOW_UI_TRAINING = "?workflowType=machine_learning"
TAG_VERSION_SUMMARY = "retrainer.summary"  # a version's one-paragraph description
