"""Gather what MLflow, the ledger and the monitor recorded about a version, and publish its card.

`publish_card` runs when a version registers and again when it is promoted or rolled back:
the Markdown becomes the model version's description and, with the Model Card Toolkit JSON and
the Hugging Face metadata, artifacts of the version's run (`card/`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from retrainer import constants as C
from retrainer.config.settings import Settings, get_settings
from retrainer.errors import VersionNotFound
from retrainer.spec import ModelSpec
from retrainer.steps import provenance

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
ARTIFACT_CARD_MD = "card/model_card.md"
ARTIFACT_CARD_JSON = "card/model_card.json"
ARTIFACT_CARD_HF = "card/README.md"
# MLflow's SQL store keeps a version's description in VARCHAR(5000): PostgreSQL refuses a longer
# one (SQLite does not check), so the card's Markdown is cut to fit; the whole card is an artifact.
MAX_DESCRIPTION = 5000
TRUNCATED = f"\n\n_(cut to fit MLflow's description; the whole card: {ARTIFACT_CARD_MD})_"


def resolve_version(client: MlflowClient, ref: str) -> tuple[str, str]:
    """`MODEL`, `MODEL@alias` or `MODEL/version` to (model, version); MODEL alone is its champion."""
    from mlflow.exceptions import MlflowException

    from retrainer.stores.registry import version_by_alias

    if "/" in ref:
        name, _, version = ref.partition("/")
        try:
            client.get_model_version(name, version)
        except MlflowException:
            raise VersionNotFound(
                f"{name} has no version {version!r} in the registry; see `retrainer models`"
            ) from None
        return name, version
    name, _, alias = ref.partition("@")
    alias = alias or C.ALIAS_CHAMPION
    mv = version_by_alias(client, name, alias)
    if mv is None:
        raise VersionNotFound(
            f"{name} has no version with alias {alias!r}; name one as {name}/<version> "
            f"(see `retrainer models`)"
        )
    return name, str(mv.version)


def _json_artifact(client: MlflowClient, run_id: str, path: str) -> dict[str, Any] | None:
    try:
        local = client.download_artifacts(run_id, path)
        with open(local) as fh:
            return dict(json.load(fh))
    except Exception:  # not recorded (older run, failed step): the card says so
        return None


def _validation_summary(report: dict[str, Any] | None) -> dict[str, Any]:
    if report is None:
        return {"summary": "not recorded"}
    results = report.get("results") or []
    failed = int(report.get("failed", 0))
    return {
        "success": bool(report.get("success")),
        "expectations": len(results),
        "failed": failed,
        "summary": (
            f"{len(results) - failed} of {len(results)} expectations passed on "
            f"{report.get('row_count')} rows (Great Expectations)"
        ),
    }


def _drift(client: MlflowClient, spec: ModelSpec, version: str) -> dict[str, Any]:
    from retrainer.steps.monitor.checks import experiment_name

    exp = client.get_experiment_by_name(experiment_name(spec))  # read only: never create it
    if exp is None:
        return {"checks": 0}
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{C.TAG_CHAMPION_VERSION}` = '{version}'",
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    )
    decisions: dict[str, int] = {}
    for r in runs:
        d = r.data.tags.get(C.TAG_MONITOR_DECISION, "unknown")
        decisions[d] = decisions.get(d, 0) + 1
    out: dict[str, Any] = {
        "checks": len(runs),
        "decisions": decisions,
        "triggered": sum(1 for r in runs if r.data.tags.get(C.TAG_MONITOR_ACTION) == "triggered"),
    }
    if runs:
        last = runs[0]
        out["last"] = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last.info.start_time / 1000)),
            "decision": last.data.tags.get(C.TAG_MONITOR_DECISION),
            "rows": last.data.metrics.get("rows"),
            "max PSI": last.data.metrics.get("max_psi"),
            "features": last.data.tags.get(C.TAG_MONITOR_FEATURES) or "-",
            "action": last.data.tags.get(C.TAG_MONITOR_ACTION) or "-",
        }
    return out


def gather_facts(spec: ModelSpec, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """Everything the card says about `version`, as plain JSON (see core.card)."""
    from retrainer.steps.cost import recent_retrains, summarise
    from retrainer.stores import storage
    from retrainer.stores.ledger import as_row, history
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    mv = client.get_model_version(spec.name, version)
    tags = dict(mv.tags or {})
    run = client.get_run(mv.run_id) if mv.run_id else None
    rtags = dict(run.data.tags) if run else {}
    params = dict(run.data.params) if run else {}
    metrics = dict(run.data.metrics) if run else {}
    gate = (_json_artifact(client, mv.run_id, C.ARTIFACT_GATE_JSON) if mv.run_id else None) or {}
    report = _json_artifact(client, mv.run_id, C.ARTIFACT_VALIDATION_JSON) if mv.run_id else None

    snapshot = tags.get(provenance.TAG_DATA_SNAPSHOT) or rtags.get(provenance.TAG_DATA_SNAPSHOT)
    snapshot_exists: bool | None = None
    if snapshot:
        try:
            snapshot_exists = storage.exists(snapshot)
        except Exception:
            snapshot_exists = None
    ledger = [as_row(e) for e in history(client, spec.name, limit=500)]
    rollout = [e for e in ledger if version in (e["to_version"], e["from_version"])]
    approvals = [
        f"{e['action']} to v{version} approved by a person through the `approve` task of "
        f"{e['dag_id']} run `{e['dag_run_id']}` (deployment.approval: manual)"
        for e in rollout
        if e["to_version"] == version
        and spec.deployment.approval == "manual"
        and e["action"] in ("promote", "initial")
    ]
    cost = summarise(metrics)
    numeric = [c for c in params.get("features.numeric", "").split(",") if c]
    categorical = [c for c in params.get("features.categorical", "").split(",") if c]
    return {
        "model": spec.name,
        "version": str(version),
        "aliases": list(mv.aliases or []),
        "created": mv.creation_timestamp,
        "model_uri": f"models:/{spec.name}/{version}",
        "description": spec.description,
        "task": spec.task,
        "owner": spec.owner,
        "card": spec.card.model_dump(),
        "data": {
            "source": rtags.get(C.TAG_DATA_SOURCE, "-"),
            "digest": tags.get(C.TAG_DATA_DIGEST) or rtags.get(C.TAG_DATA_DIGEST, "-"),
            "rows": int(metrics["data.rows"])
            if "data.rows" in metrics
            else report and report.get("row_count"),
            "bytes": int(metrics["data.bytes"]) if "data.bytes" in metrics else None,
            "time_range": rtags.get(provenance.TAG_TIME_RANGE),
            "validation": _validation_summary(report),
            "snapshot": snapshot,
            "snapshot_exists": snapshot_exists,
            "retention": tags.get(provenance.TAG_SNAPSHOT_RETENTION)
            or rtags.get(provenance.TAG_SNAPSHOT_RETENTION),
        },
        "training": {
            "estimator": params.get("estimator", spec.model.estimator),
            "params": {k[len("model.") :]: v for k, v in params.items() if k.startswith("model.")},
            "target": params.get("target", spec.data.target),
            "numeric": numeric,
            "categorical": categorical,
            "train_rows": params.get("rows.train"),
            "test_rows": params.get("rows.test"),
            "code_version": rtags.get(provenance.TAG_CODE_VERSION, "not recorded"),
            "lock_digest": rtags.get(provenance.TAG_LOCK_DIGEST, "not recorded"),
            "seed": rtags.get(provenance.TAG_SEED, f"split={params.get('random_state', '-')}"),
            "reason": rtags.get(C.TAG_REASON, ""),
            "trigger_origin": rtags.get(C.TAG_TRIGGER_ORIGIN, ""),
            "dag_run_id": tags.get(C.TAG_DAG_RUN_ID) or rtags.get(C.TAG_DAG_RUN_ID),
            "mlflow_run_id": mv.run_id,
        },
        "evaluation": gate,
        "cost": cost.to_dict() if cost else None,
        "recent_retrains": recent_retrains(spec, 30, settings).to_dict(),
        "drift": _drift(client, spec, version),
        "rollout": rollout,
        "approvals": approvals,
        "generated": int(time.time() * 1000),
    }


def fit_description(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """The description as MLflow can store it: whole, or cut at a line end with a pointer."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(TRUNCATED)]
    end = cut.rfind("\n")
    return (cut[:end] if end > 0 else cut).rstrip() + TRUNCATED


def build_card(spec: ModelSpec, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """The card in every form: facts, Markdown, Model Card Toolkit JSON, Hugging Face YAML."""
    from retrainer.core import card

    facts = gather_facts(spec, version, settings)
    markdown = card.to_markdown(facts)
    mct = card.to_mct(facts)
    card.validate_mct(mct)
    return {"facts": facts, "markdown": markdown, "mct": mct, "hf": card.to_hf_metadata(facts)}


def publish_card(spec: ModelSpec, version: str, settings: Settings | None = None) -> dict[str, Any]:
    """Write the card: the version's description (Markdown), and artifacts in its run's `card/`."""
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    built = build_card(spec, version, settings)
    summary = client.get_model_version(spec.name, version).tags.get(C.TAG_VERSION_SUMMARY)
    description = (f"{summary}\n\n" if summary else "") + built["markdown"]
    description = fit_description(description)
    client.update_model_version(spec.name, version, description=description)
    run_id = built["facts"]["training"]["mlflow_run_id"]
    if run_id:
        client.log_text(run_id, built["markdown"], ARTIFACT_CARD_MD)
        client.log_text(run_id, json.dumps(built["mct"], indent=2), ARTIFACT_CARD_JSON)
        client.log_text(run_id, built["hf"] + "\n" + built["markdown"], ARTIFACT_CARD_HF)
    log.info("model card of %s v%s written", spec.name, version)
    return built
