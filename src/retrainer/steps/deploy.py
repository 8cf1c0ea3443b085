"""Deployment steps as plain functions: promote, reload serving, smoke test, roll back.

Aliases are the deployment state: `champion` is what serving loads, `previous` is where a
rollback goes. Every move is written to the ledger. Serving never stops answering: a reload that
fails leaves the old model in place, and a failed smoke test moves `champion` back and reloads.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import httpx

from retrainer import constants as C
from retrainer.config.secrets import api_token, serving_admin_token
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.errors import DeployError
from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
SMOKE_ROWS = 50


def _client(settings: Settings) -> MlflowClient:
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client(settings)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version number an alias of `name` points to, or None."""
    from retrainer.stores.registry import version_by_alias

    mv = version_by_alias(client, name, alias)
    return None if mv is None else str(mv.version)


def ledger(
    client: MlflowClient,
    settings: Settings,
    spec: ModelSpec,
    ctx: RunContext,
    action: str,
    from_version: str | None,
    to_version: str,
    reason: str,
    metrics: dict[str, str] | None = None,
) -> str:
    """Write one ledger entry for `to_version` (its gate metrics unless `metrics` are given)."""
    from retrainer.stores.ledger import LedgerEntry, record

    mv = client.get_model_version(spec.name, to_version)
    tags = mv.tags or {}
    entry = LedgerEntry(
        model=spec.name,
        action=action,
        from_version=from_version,
        to_version=to_version,
        triggered_by=ctx.triggered_by,
        reason=reason,
        dag_id=ctx.dag_id,
        dag_run_id=ctx.run_id,
        dag_run_url=f"{settings.airflow_ui_url}/dags/{ctx.dag_id}/runs/{ctx.run_id}",
        mlflow_run_id=mv.run_id or "",
        data_digest=tags.get(C.TAG_DATA_DIGEST, ""),
        metrics=metrics
        if metrics is not None
        else {k[len("metric.") :]: v for k, v in tags.items() if k.startswith("metric.")},
    )
    return record(client, entry, settings.artifact_location("ledger"))


def promote(
    spec: ModelSpec,
    ctx: RunContext,
    version: str | None = None,
    reason: str = "",
    origin: str = "manual",
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Move `champion` to `version` (default: the challenger); the old champion becomes `previous`.

    A manual run naming a version below the champion is a rollback; naming another is a pin.
    """
    settings = settings or get_settings()
    client = _client(settings)
    manual = version is not None and origin != "retrain"
    target = (
        str(version)
        if version is not None
        else alias_version(client, spec.name, C.ALIAS_CHALLENGER)
    )
    if target is None:
        raise DeployError(
            f"{spec.name}: no challenger to deploy and no version given; run {spec.retrain_dag_id} first"
        )
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(spec.name, target)
    except MlflowException:
        raise DeployError(
            f"{spec.name}: there is no version {target} in the registry; see `retrainer models`"
        ) from None
    from retrainer.stores.ledger import moved_in_run

    current = alias_version(client, spec.name, C.ALIAS_CHAMPION)
    # A retry of this task (MLflow failed under its first try) finds what the first try
    # recorded: the champion it replaced is that entry's, not the alias it may already have moved
    earlier = moved_in_run(client, spec.name, ctx.run_id, target)
    if earlier is not None:
        entry, ledger_id = earlier
        action, current = entry.action, entry.from_version
        log.warning(
            "%s: retried: %s v%s -> v%s was recorded by the first try",
            spec.name,
            action,
            current,
            target,
        )
    elif current == target:
        action = (
            "initial" if alias_version(client, spec.name, C.ALIAS_PREVIOUS) is None else "confirm"
        )
    elif manual:
        action = "rollback" if current is not None and int(target) < int(current) else "pin"
    else:
        action = "promote"
    from_version = None if action == "initial" else current
    if earlier is None:
        # The ledger first, then the aliases: a failure between them leaves an entry a retry
        # finds, never a moved champion that nothing records
        ledger_id = ledger(client, settings, spec, ctx, action, from_version, target, reason)
    if (
        action not in ("initial", "confirm")
        and alias_version(client, spec.name, C.ALIAS_CHAMPION) != target
    ):
        if current is not None:
            client.set_registered_model_alias(spec.name, C.ALIAS_PREVIOUS, current)
        client.set_registered_model_alias(spec.name, C.ALIAS_CHAMPION, target)
    _update_cards(spec, [target, current], settings)
    log.info(
        "%s: %s v%s -> v%s (%s)", spec.name, action, current, target, reason or "no reason given"
    )
    return {
        "model": spec.name,
        "version": target,
        "previous": current,
        "action": action,
        "ledger_run_id": ledger_id,
    }


def reload_serving(
    spec: ModelSpec, version: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Ask the serving API to load `version`; it keeps the old model if loading fails."""
    settings = settings or get_settings()
    url = f"{settings.serving_url}/reload"
    try:
        resp = httpx.post(
            url,
            json={"model": spec.name, "version": version},
            headers={"Authorization": f"Bearer {serving_admin_token(settings)}"},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        raise DeployError(
            f"serving at {settings.serving_url} is unreachable ({exc}); is `retrainer serve` running?"
        ) from None
    body = (
        resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    )
    result = (body.get("models") or {}).get(spec.name, {})
    if resp.status_code != 200 or not result.get("ok"):
        raise DeployError(
            f"serving could not load {spec.name} v{version}: {result.get('error') or resp.text[:500]}; "
            f"still serving v{result.get('serving')}"
        )
    return dict(result)


def _update_cards(spec: ModelSpec, versions: list[str | None], settings: Settings) -> None:
    """The cards of the versions a move touched: their aliases and rollout history changed."""
    from retrainer.steps.card import publish_card

    for version in dict.fromkeys(v for v in versions if v):
        try:
            publish_card(spec, version, settings)
        except Exception as exc:  # the card documents the move; it never blocks a deployment
            log.warning("could not update the model card of %s v%s: %s", spec.name, version, exc)


def smoke_test(spec: ModelSpec, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """The live endpoint serves `version`, and its answers on held-back rows equal the registry's."""
    import json

    import mlflow.sklearn
    import numpy as np
    import pandas as pd

    from retrainer.core.training import prepare_features

    settings = settings or get_settings()
    client = _client(settings)
    headers = {}
    token = api_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    info = httpx.get(f"{settings.serving_url}/models/{spec.name}", headers=headers, timeout=30)
    if info.status_code != 200 or info.json().get("version") != version:
        raise DeployError(
            f"serving answers {info.status_code} {info.text[:300]} for {spec.name}; expected version {version}"
        )
    inputs = info.json()["inputs"]
    columns = [c["name"] for c in inputs]
    required = {c["name"] for c in inputs if c["required"]}

    mv = client.get_model_version(spec.name, version)
    if not mv.run_id:
        raise DeployError(
            f"{spec.name} v{version} has no MLflow run, so no held-back rows to test with"
        )
    path = client.download_artifacts(mv.run_id, C.ARTIFACT_SMOKE_ROWS)
    with open(path) as fh:
        rows = [{k: r.get(k) for k in columns} for r in json.load(fh)]
    # Rows the signature would refuse (a null where training had none) are not a fair test.
    rows = [r for r in rows if all(r[c] is not None for c in required)]
    if not rows:
        raise DeployError(
            f"smoke test: no usable held-back rows in {C.ARTIFACT_SMOKE_ROWS} of v{version}"
        )
    resp = httpx.post(
        f"{settings.serving_url}/models/{spec.name}/predict",
        json={"rows": rows},
        headers=headers,
        timeout=60,
    )
    if resp.status_code != 200:
        raise DeployError(f"smoke test: serving answered {resp.status_code}: {resp.text[:500]}")
    served = resp.json()
    if served["model_version"] != version:
        raise DeployError(
            f"smoke test: answered by v{served['model_version']}, expected v{version}"
        )

    model = mlflow.sklearn.load_model(f"models:/{spec.name}/{version}")
    from retrainer.core.training import model_feature_columns

    numeric, categorical = model_feature_columns(model)
    frame = prepare_features(pd.DataFrame.from_records(rows, columns=columns), numeric, categorical)
    if spec.task == "classification":
        expected = model.predict(frame)
        proba = model.predict_proba(frame)
        got_labels = [p["label"] for p in served["predictions"]]
        got_proba = np.array(
            [[p["probabilities"][str(c)] for c in model.classes_] for p in served["predictions"]]
        )
        mismatched = int(sum(str(a) != str(b) for a, b in zip(got_labels, expected, strict=True)))
        max_diff = float(np.abs(got_proba - proba).max())
    else:
        expected = model.predict(frame)
        got = np.array([p["value"] for p in served["predictions"]])
        mismatched = int((np.abs(got - expected) > 1e-9).sum())
        max_diff = float(np.abs(got - expected).max())
    if mismatched or max_diff > 1e-9:
        raise DeployError(
            f"smoke test: {mismatched} of {len(rows)} held-back predictions differ from the registered "
            f"model (max difference {max_diff:.3g})"
        )
    log.info(
        "smoke test passed: %d held-back rows, v%s, max difference %.3g",
        len(rows),
        version,
        max_diff,
    )
    return {"rows": len(rows), "version": version, "max_difference": max_diff}


def rollback(
    spec: ModelSpec,
    ctx: RunContext,
    promoted: dict[str, Any] | None,
    error: str,
    settings: Settings | None = None,
) -> dict[str, Any] | None:
    """Undo a failed deployment: `champion` back to the version it replaced, serving reloaded."""
    settings = settings or get_settings()
    if not promoted or promoted.get("previous") in (None, promoted.get("version")):
        return None  # nothing was moved
    client = _client(settings)
    failed, back = promoted["version"], promoted["previous"]
    client.set_registered_model_alias(spec.name, C.ALIAS_CHAMPION, back)
    client.delete_registered_model_alias(spec.name, C.ALIAS_PREVIOUS)
    client.set_model_version_tag(spec.name, failed, "retrainer.deploy", f"failed: {error[:4000]}")
    reload_error = ""
    try:
        reload_serving(spec, back, settings)
    except DeployError as exc:  # serving still has the old model if its reload had failed
        reload_error = str(exc)
    ledger_id = ledger(
        client,
        settings,
        spec,
        ctx,
        "auto-rollback",
        failed,
        back,
        f"deploy of v{failed} failed: {error}"[:4000],
    )
    _update_cards(spec, [back, failed], settings)
    log.error("%s: rolled back from v%s to v%s: %s", spec.name, failed, back, error)
    return {"from": failed, "to": back, "ledger_run_id": ledger_id, "reload_error": reload_error}
