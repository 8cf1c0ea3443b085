"""Carrying registered models to another MLflow store (embedded → production upgrade path)."""

import pandas as pd
import pytest

from conftest import register_version
from retrainer import constants as C
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration


def test_versions_runs_artifacts_and_aliases_are_copied_once(airflow_db, tmp_path):
    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    from retrainer.platform.migrate import copy_models

    source = get_settings().tracking_uri
    first = register_version("credit_copy", "copy-v1")
    target_uri = f"sqlite:///{tmp_path / 'target.db'}"
    target = MlflowClient(target_uri, target_uri)
    copied = copy_models(source, target, ["credit_copy"], artifact_root=(tmp_path / "art").as_uri())
    assert copied and not any(c.skipped for c in copied)
    src = MlflowClient(source, source)
    champion = src.get_model_version_by_alias("credit_copy", C.ALIAS_CHAMPION)
    new = target.get_model_version_by_alias("credit_copy", C.ALIAS_CHAMPION)
    assert next(
        c for c in copied if c.source_version == str(champion.version)
    ).target_version == str(new.version)
    assert new.tags[C.TAG_GATE_DECISION] == champion.tags[C.TAG_GATE_DECISION]
    # The run carries what deploy and monitoring need; the model predicts exactly the same.
    run = target.get_run(new.run_id)
    assert run.data.params["estimator"].endswith("HistGradientBoostingClassifier")
    listed = {a.path for a in target.list_artifacts(new.run_id, "monitoring")}
    assert C.ARTIFACT_REFERENCE_PROFILE in listed
    rows = (
        pd.read_csv(
            __import__("pathlib").Path(__file__).resolve().parents[2]
            / "examples/credit/traffic/base.csv"
        )
        .drop(columns=["Status"])
        .head(50)
    )
    from retrainer.core.training import prepare_features

    before = mlflow.sklearn.load_model(f"models:/credit_copy/{champion.version}")
    mlflow.set_tracking_uri(target_uri)
    mlflow.set_registry_uri(target_uri)
    try:
        after = mlflow.sklearn.load_model("models:/credit_copy@champion")
    finally:
        mlflow.set_tracking_uri(source)
        mlflow.set_registry_uri(source)
    num = [c for c in rows.columns if rows[c].dtype.kind in "if"]
    cat = [c for c in rows.columns if c not in num]
    X = prepare_features(rows, num, cat)
    assert (before.predict_proba(X) == after.predict_proba(X)).all()
    # A second run copies nothing twice.
    again = copy_models(source, target, ["credit_copy"])
    assert all(c.skipped for c in again) and len(again) == len(copied)
    assert first
