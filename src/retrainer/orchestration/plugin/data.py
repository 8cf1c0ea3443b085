"""What the Models page shows, as JSON: every model the user may see, with its versions and
decisions, built from the specs and the MLflow overview (two MLflow calls, cached briefly)."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from retrainer import constants as C
from retrainer.config.settings import Settings, get_settings
from retrainer.spec import ModelSpec, SpecError, iter_specs, spec_files

log = logging.getLogger(__name__)
CACHE_SECONDS_ENV = "RETRAINER_MODELS_PAGE_CACHE_SECONDS"
DEFAULT_CACHE_SECONDS = 10.0
STALE_FACTOR = 6  # older than this many cache periods (an idle page): read before answering
PAGE_VERSIONS = 3  # the latest versions listed per model, besides the aliased ones


@dataclass
class _Cache:
    """The last overview, shared by every user (filtered per user afterwards)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    at: float = 0.0
    key: tuple[Any, ...] = ()
    value: dict[str, Any] = field(default_factory=dict)
    refreshing: bool = False


_CACHE = _Cache()
_SPECS: dict[str, Any] = {}


def cache_seconds() -> float:
    try:
        return float(os.environ.get(CACHE_SECONDS_ENV, DEFAULT_CACHE_SECONDS))
    except ValueError:
        return DEFAULT_CACHE_SECONDS


def load_specs(models_dir: Path) -> tuple[list[ModelSpec], list[tuple[str, str | None]]]:
    """Every valid spec (re-read only when a file in the folder changed) and the broken files,
    each with the team it names (None when it names none or cannot be read)."""
    stamp = tuple((f.name, _mtime(f)) for f in spec_files(models_dir))
    if _SPECS.get("stamp") != stamp or _SPECS.get("dir") != models_dir:
        specs, broken = [], []
        for path, spec in iter_specs(models_dir):
            if isinstance(spec, SpecError):
                broken.append((path.name, spec.team))
            else:
                specs.append(spec)
        _SPECS.update(stamp=stamp, dir=models_dir, specs=specs, broken=broken)
    return list(_SPECS["specs"]), list(_SPECS["broken"])


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # removed since the listing
        return 0


def overview(settings: Settings, names: list[str]) -> dict[str, Any]:
    """The MLflow overview of `names`. Within `cache_seconds()` the cached one; after that the
    cached one still, while one background thread reads a fresh one (stale-while-revalidate), so
    only the first request after start-up (or a change of models) waits for MLflow."""
    key = (settings.tracking_uri, tuple(names))
    ttl = cache_seconds()
    if ttl <= 0:
        return _read(settings, names)
    with _CACHE.lock:
        fresh = _CACHE.key == key and time.monotonic() - _CACHE.at < ttl
        if fresh or (_CACHE.key == key and _CACHE.refreshing):
            return _CACHE.value
        if _CACHE.key == key and time.monotonic() - _CACHE.at < ttl * STALE_FACTOR:
            # stale but recent: answer with it, refresh behind
            _CACHE.refreshing = True
            threading.Thread(target=_refresh, args=(settings, names, key), daemon=True).start()
            return _CACHE.value
    try:
        value = _read(settings, names)  # nothing cached for these models, or long ago
    except Exception:
        with _CACHE.lock:
            if _CACHE.key == key and _CACHE.value:  # MLflow down: the last overview, however old
                log.warning("MLflow unreachable: the Models page shows the last overview read")
                return _CACHE.value
        raise
    with _CACHE.lock:
        _CACHE.at, _CACHE.key, _CACHE.value = time.monotonic(), key, value
    return value


def _read(settings: Settings, names: list[str]) -> dict[str, Any]:
    from retrainer.stores.overview import read_overview
    from retrainer.stores.tracking import mlflow_client

    return read_overview(mlflow_client(settings), names)


def _refresh(settings: Settings, names: list[str], key: tuple[Any, ...]) -> None:
    try:
        value = _read(settings, names)
    except Exception:  # MLflow unreachable: keep serving the last overview
        log.exception("could not refresh the models overview from MLflow")
        with _CACHE.lock:
            _CACHE.refreshing = False
        return
    with _CACHE.lock:
        _CACHE.at, _CACHE.key, _CACHE.value, _CACHE.refreshing = time.monotonic(), key, value, False


def clear_cache() -> None:
    with _CACHE.lock:
        _CACHE.at, _CACHE.key, _CACHE.value, _CACHE.refreshing = 0.0, (), {}, False


def dag_ids(spec: ModelSpec) -> dict[str, str]:
    return {
        "retrain": spec.retrain_dag_id,
        "deploy": spec.deploy_dag_id,
        "monitor": spec.monitor_dag_id,
    }


# What the page reads of a summary as a number, a list of texts, or a table of numbers; any
# other shape in a tag (anyone who may write MLflow tags writes these) is dropped, never shown.
NUMBERS = ("time", "candidate", "champion", "max_psi", "rows", "psi_warn", "psi_retrain")
ESTIMATE_NUMBERS = ("estimated", "reference", "drop", "outside_share")


def _number(value: Any) -> float | int | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _texts(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _run_link(ref: Any, mlflow: str) -> dict[str, Any] | None:
    """A decision's summary as the page may show it, with its Airflow and MLflow links (made
    here from the ids, never taken from the tag)."""
    if not isinstance(ref, dict) or not ref:
        return None
    out: dict[str, Any] = {
        k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
        for k, v in ref.items()
        if isinstance(k, str) and k not in ("airflow_url", "mlflow_url", "psi", "estimate")
    }
    out |= {k: _number(ref.get(k)) for k in NUMBERS if k in ref}
    for k in ("reasons", "features"):
        if k in ref:
            out[k] = _texts(ref[k])
    if isinstance(ref.get("psi"), dict):
        out["psi"] = {str(f): _number(v) for f, v in ref["psi"].items()}
    estimate = ref.get("estimate")
    if isinstance(estimate, dict):
        out["estimate"] = {
            "metric": str(estimate.get("metric") or ""),
            "trusted": estimate.get("trusted") is not False,
            **{k: _number(estimate.get(k)) for k in ESTIMATE_NUMBERS},
        }
    dag_id, dag_run_id = ref.get("dag_id"), ref.get("dag_run_id")
    if dag_id and dag_run_id:
        out["airflow_url"] = (
            f"dags/{quote(str(dag_id), safe='')}/runs/{quote(str(dag_run_id), safe='')}"
        )
    if ref.get("mlflow_run_id"):
        run = quote(str(ref["mlflow_run_id"]), safe="")
        exp = quote(str(ref.get("experiment_id") or ""), safe="")
        out["mlflow_url"] = (
            f"{mlflow}/#/experiments/{exp}/runs/{run}" if exp else f"{mlflow}/#/runs/{run}"
        ) + C.MLFLOW_UI_TRAINING
    return out


def errors_dag_of(team: str | None) -> str:
    """The DAG that shows a broken spec naming `team`: its team's in multi-team mode, else the
    shared one (where build_dags puts it)."""
    from retrainer.orchestration.dags import multi_team
    from retrainer.orchestration.teams import spec_errors_dag_id

    return spec_errors_dag_id(team if multi_team() else None)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def model_rows(
    visible: set[str] | None,
    settings: Settings | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """The page's data: one row per model whose DAGs the user may read (`visible`: DAG ids, or
    None for every model), and the broken spec files whose errors DAG the user may read."""
    settings = settings or get_settings()
    specs, broken_specs = load_specs(settings.models_dir)
    broken = [
        name for name, team in broken_specs if visible is None or errors_dag_of(team) in visible
    ]
    if only:
        specs = [s for s in specs if s.name == only]
    if visible is not None:
        specs = [s for s in specs if visible & set(dag_ids(s).values())]
    mlflow = settings.mlflow_ui_url
    known = overview(settings, sorted(s.name for s in load_specs(settings.models_dir)[0]))
    rows = []
    for spec in specs:
        reg = known.get(spec.name, {})
        aliases = reg.get("aliases", {})
        aliased = set(aliases.values())
        versions = [
            v
            | {
                "mlflow_url": f"{mlflow}/#/models/{quote(spec.name)}/versions/{v['version']}"
                + C.MLFLOW_UI_TRAINING
            }
            for i, v in enumerate(reg.get("versions", []))
            if i < PAGE_VERSIONS or v["version"] in aliased
        ]
        by_version = {v["version"]: v for v in versions}
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "owner": spec.owner,
                "task": spec.task,
                "approval": spec.deployment.approval,
                "primary_metric": spec.gate.primary_metric,
                "psi_warn": spec.monitoring.psi_warn,
                "psi_retrain": spec.monitoring.psi_retrain,
                "schedule": spec.monitoring.schedule,
                "dags": dag_ids(spec),
                "aliases": {
                    alias: by_version.get(version, {"version": version})
                    for alias, version in aliases.items()
                },
                "versions": versions,
                "version_count": reg.get("version_count", 0),
                "gate": _run_link(reg.get("gate"), mlflow),
                "monitor": _run_link(reg.get("monitor"), mlflow),
                "ledger": [
                    e for e in (_run_link(r, mlflow) for r in _list(reg.get("ledger"))) if e
                ],
                "mlflow_url": f"{mlflow}/#/models/{quote(spec.name)}{C.MLFLOW_UI_TRAINING}",
            }
        )
    return {"models": rows, "broken_specs": broken, "mlflow_url": mlflow}


def warm_up(settings: Settings | None = None) -> None:
    """Read the overview once in the background (at api-server start), so that no user waits
    for MLflow; a failure only means the first request reads it."""
    settings = settings or get_settings()

    def read() -> None:
        try:
            specs, _ = load_specs(settings.models_dir)
            overview(settings, sorted(s.name for s in specs))
        except Exception:
            log.warning("models overview not warmed up (MLflow unreachable?)", exc_info=True)

    threading.Thread(target=read, daemon=True).start()
