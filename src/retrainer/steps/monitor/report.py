"""What a check shows people: Evidently's report in MLflow, and numbers for serving's /metrics."""

from __future__ import annotations

import logging
from typing import Any

from retrainer import constants as C
from retrainer.config.secrets import serving_admin_token
from retrainer.config.settings import Settings, get_settings
from retrainer.spec import ModelSpec
from retrainer.steps.monitor.checks import champion_reference

log = logging.getLogger(__name__)

EVIDENTLY_MAX_ROWS = 20_000


def evidently_report(
    spec: ModelSpec, measured: dict[str, Any], settings: Settings | None = None
) -> str | None:
    """Evidently's DataDriftPreset (PSI) of the window vs the champion's reference sample, as HTML."""
    import tempfile

    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from retrainer.stores import storage
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    window = measured["window"]
    if not window.get("uri"):
        log.info("empty window: no Evidently report")
        return None
    run_id = measured["mlflow_run_id"]
    _, champ_run, profile = champion_reference(client, spec)
    sample_path = client.download_artifacts(champ_run, C.ARTIFACT_REFERENCE_SAMPLE)
    reference = pd.read_parquet(sample_path)
    current = storage.read_table(window["uri"])
    problems = measured["decision"].get("problems") or {}
    numeric = [c for c in profile.numeric if c in current.columns and c not in problems]
    categorical = [c for c in profile.categorical if c in current.columns and c not in problems]
    if not numeric and not categorical:
        return None
    if len(current) > EVIDENTLY_MAX_ROWS:
        current = current.sample(EVIDENTLY_MAX_ROWS, random_state=0)
    from retrainer.core.training import prepare_features

    cur = prepare_features(current, numeric, categorical)
    ref = prepare_features(reference, numeric, categorical)
    cur = cur[[c for c in cur.columns if cur[c].notna().any()]]
    ref = ref[list(cur.columns)]
    definition = DataDefinition(
        numerical_columns=[c for c in numeric if c in cur.columns],
        categorical_columns=[c for c in categorical if c in cur.columns],
    )
    snapshot = Report([DataDriftPreset(method="psi")]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/drift_report.html"
        snapshot.save_html(path)
        client.log_artifact(run_id, path, "drift")
    client.set_tag(run_id, C.TAG_MONITOR_REPORT, C.ARTIFACT_MONITOR_REPORT)
    return C.ARTIFACT_MONITOR_REPORT


def publish(
    spec: ModelSpec,
    decision: dict[str, Any] | None = None,
    triggered: bool = False,
    settings: Settings | None = None,
) -> bool:
    """Report a check to the serving API's /metrics (best effort: never fails the check)."""
    import httpx

    settings = settings or get_settings()
    body: dict[str, Any] = {"triggered": triggered}
    if decision:
        body |= {"decision": decision["decision"], "psi": decision.get("psi") or {}}
    try:
        resp = httpx.post(
            f"{settings.serving_url}/models/{spec.name}/drift",
            json=body,
            headers={"authorization": f"Bearer {serving_admin_token(settings)}"},
            timeout=10,
        )
        resp.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.warning("could not report the check to serving at %s: %s", settings.serving_url, exc)
        return False
