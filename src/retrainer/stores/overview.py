"""Every model at a glance, in two MLflow calls: what the Models page and alerts read.

Reading the last gate and monitor decisions by searching runs costs one query per model (and
more per feature); with a hundred models the page would take seconds. So each decision, when it
is made, also leaves a short summary on the registered model as a tag (`retrainer.summary.gate`,
`retrainer.summary.monitor`, `retrainer.summary.ledger`), and the overview is one search of
registered models (tags and aliases) plus one search of model versions. The full records stay in
the runs the summaries link to.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from retrainer import constants as C

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

SUMMARY_GATE = "retrainer.summary.gate"
SUMMARY_MONITOR = "retrainer.summary.monitor"
SUMMARY_LEDGER = "retrainer.summary.ledger"
LEDGER_KEEP = 5
VERSIONS_KEEP = 10
TAG_LIMIT = 5000  # MLflow's limit on a registered model's tag value
PSI_KEEP = 30  # the largest PSI values kept in the summary (the run has them all)


def _dump(value: dict[str, Any] | list[Any]) -> str:
    return json.dumps(_finite(value), separators=(",", ":"), default=str)


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_summary(client: MlflowClient, model: str, key: str, value: dict[str, Any]) -> None:
    """Leave a decision's summary on the registered model (created if it does not exist yet)."""
    from retrainer.stores.registry import ensure_registered_model

    ensure_registered_model(client, model)
    text = _dump(value)
    if len(text) > TAG_LIMIT and "psi" in value:  # keep the largest PSI values
        psi = value.get("psi") or {}
        top = sorted(psi.items(), key=lambda kv: -(kv[1] or 0.0))[:PSI_KEEP]
        text = _dump({**value, "psi": dict(top), "psi_truncated": len(psi)})
    if len(text) > TAG_LIMIT:
        text = _dump({k: v for k, v in value.items() if k not in ("reasons", "psi", "metrics")})
    client.set_registered_model_tag(model, key, text[:TAG_LIMIT])


def gate_summary(decision: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision": decision["decision"],
        "reasons": decision.get("reasons", [])[:5],
        "primary_metric": decision.get("primary_metric"),
        "candidate": (decision.get("candidate_metrics") or {}).get(decision.get("primary_metric")),
        "champion": (decision.get("champion_metrics") or {}).get(decision.get("primary_metric")),
        "champion_version": decision.get("champion_version"),
        **run,
    }


def monitor_summary(decision: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    return {
        "decision": decision["decision"],
        "reasons": decision.get("reasons", [])[:5],
        "features": decision.get("features", [])[:10],
        "psi": decision.get("psi") or {},
        "max_psi": decision.get("max_psi"),
        "rows": decision.get("rows"),
        "psi_warn": decision.get("psi_warn"),
        "psi_retrain": decision.get("psi_retrain"),
        "champion_version": decision.get("champion_version"),
        "estimate": _estimate_summary(decision.get("estimate")),
        **run,
    }


def _estimate_summary(estimate: dict[str, Any] | None) -> dict[str, Any] | None:
    """The label-free estimate in a line: metric, value, reference, and whether it is trusted."""
    if not estimate:
        return None
    support = estimate.get("support") or {}
    return {
        "metric": estimate.get("metric"),
        "estimated": estimate.get("estimated"),
        "reference": estimate.get("reference"),
        "drop": estimate.get("drop"),
        "outside_share": support.get("outside_share"),
        "trusted": support.get("within", True),
    }


def read_summary(client: MlflowClient, model: str, key: str) -> Any:
    """One summary of one model (None if there is none yet)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(model).tags or {}
    except MlflowException:
        return None
    return _load(tags.get(key))


def add_ledger_summary(client: MlflowClient, model: str, entry: dict[str, Any]) -> None:
    """Prepend a ledger entry to the model's recent-ledger summary (the last few)."""
    recent = read_summary(client, model, SUMMARY_LEDGER) or []
    recent = [entry, *recent][:LEDGER_KEEP]
    while len(_dump(recent)) > TAG_LIMIT and len(recent) > 1:
        recent = recent[:-1]
    write_summary_list(client, model, SUMMARY_LEDGER, recent)


def write_summary_list(client: MlflowClient, model: str, key: str, value: list[Any]) -> None:
    from retrainer.stores.registry import ensure_registered_model

    ensure_registered_model(client, model)
    client.set_registered_model_tag(model, key, _dump(value)[:TAG_LIMIT])


def _load(text: str | None) -> Any:
    """A summary tag's JSON; NaN and infinities (a one-class test split's roc_auc) as None, so
    what reads it can answer it as JSON."""
    if not text:
        return None
    try:
        return json.loads(text, parse_constant=lambda _: None)
    except ValueError:
        return None


def read_overview(
    client: MlflowClient, names: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Aliases, the latest versions and the decision summaries of every registered model (or of
    `names`), from one search of registered models and one of model versions."""
    wanted = set(names) if names is not None else None
    models: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for rm in page:
            if wanted is not None and rm.name not in wanted:
                continue
            tags = rm.tags or {}
            aliases = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
            models[rm.name] = {
                "name": rm.name,
                "aliases": aliases,
                "gate": _load(tags.get(SUMMARY_GATE)),
                "monitor": _load(tags.get(SUMMARY_MONITOR)),
                "ledger": _load(tags.get(SUMMARY_LEDGER)) or [],
                "versions": [],
            }
        token = page.token
        if not token:
            break
    if not models:
        return models
    by_model: dict[str, list[Any]] = defaultdict(list)
    token = None
    while True:
        versions = client.search_model_versions(max_results=10000, page_token=token)
        for mv in versions:
            if mv.name in models:
                by_model[mv.name].append(mv)
        token = versions.token
        if not token:
            break
    for name, found in by_model.items():
        found.sort(key=lambda v: int(v.version), reverse=True)
        aliased = set(models[name]["aliases"].values())
        keep = [v for i, v in enumerate(found) if i < VERSIONS_KEEP or str(v.version) in aliased]
        models[name]["versions"] = [_version(v) for v in keep]
        models[name]["version_count"] = len(found)
    return models


def _version(mv: Any) -> dict[str, Any]:
    tags = mv.tags or {}
    return {
        "version": str(mv.version),
        "aliases": list(mv.aliases or []),
        "run_id": mv.run_id,
        "gate": tags.get(C.TAG_GATE_DECISION, ""),
        "metrics": {k[len("metric.") :]: v for k, v in tags.items() if k.startswith("metric.")},
        "dag_run_id": tags.get(C.TAG_DAG_RUN_ID),
        "data_digest": tags.get(C.TAG_DATA_DIGEST),
        "deploy": tags.get("retrainer.deploy", ""),
        "created": mv.creation_timestamp,
        "description": mv.description or "",
    }
