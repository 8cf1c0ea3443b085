"""Admin routes (the admin token): reload a version, report a monitor check, flush the logs."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from retrainer.serving.http import (
    JSON,
    HTTPProblem,
    JSONResponse,
    authorize,
    media_type,
    parse_json,
    read_body,
    read_json,
)
from retrainer.serving.metrics import DECISIONS
from retrainer.serving.routes.deps import state_of
from retrainer.serving.state import VERSION_OR_ALIAS

log = logging.getLogger("retrainer.serving")
router = APIRouter(include_in_schema=False)


def _reload_target(body: Any, served: list[str]) -> tuple[list[str], str | None]:
    shape = 'expected {} (every model), {"model": name} or {"model": name, "version": v}'
    if not isinstance(body, dict) or set(body) - {"model", "version"}:
        raise HTTPProblem(422, shape)
    if any(body.get(k, "") is None for k in ("model", "version")):
        raise HTTPProblem(422, f"{shape}: leave a key out rather than send null")
    model, version = body.get("model"), body.get("version")
    if model is None:
        if version is not None:
            raise HTTPProblem(422, f"{shape}: a version needs its model")
        return list(served), None
    if not isinstance(model, str):
        raise HTTPProblem(422, f"{shape}: model must be a string")
    if model not in served:
        raise HTTPProblem(404, f"no model {model[:100]!r} in this server; served: {served}")
    if version is not None:
        if isinstance(version, int) and not isinstance(version, bool) and version > 0:
            version = str(version)
        if not isinstance(version, str) or not VERSION_OR_ALIAS.fullmatch(version):
            raise HTTPProblem(422, f"{shape}: version must be a version number or an alias name")
    return [model], version


@router.post("/reload")
async def reload(request: Request) -> Response:
    """Load the champion (or {"version": v}) of one model ({"model": name}) or of all, then swap."""
    state = state_of(request)
    authorize(request, state.tokens(admin=True))
    raw = await read_body(request, state.options.max_body_bytes, state.options.body_seconds)
    body: Any = {}
    if raw.strip():
        media_type(request, (JSON,))
        body = parse_json(raw)
    names, version = _reload_target(body, state.model_names)
    loop = asyncio.get_running_loop()
    results: dict[str, Any] = {}
    failed = False
    async with state.reload_lock:
        for name in names:
            old = state.models.get(name)
            try:
                handle = await loop.run_in_executor(None, state.load, name, version)
            except HTTPProblem:
                raise
            except Exception as exc:
                failed = True
                state.metrics.reloads.labels(name, "failed").inc()
                log.exception(
                    "reload of %s failed; still serving %s", name, old.version if old else "nothing"
                )
                results[name] = {
                    "ok": False,
                    "serving": old.version if old else None,
                    "error": f"{type(exc).__name__}: {exc}"[:1000],
                }
                continue
            if handle is not None:
                state.install(handle)
                state.metrics.reloads.labels(name, "ok").inc()
            results[name] = {
                "ok": True,
                "from": old.version if old else None,
                "serving": handle.version if handle else None,
            }
    return JSONResponse({"models": results}, status_code=500 if failed else 200)


@router.post("/models/{name}/drift")
async def drift(name: str, request: Request) -> dict[str, Any]:
    """The monitor's last check: {"decision": ..., "psi": {feature: value}, "triggered": bool}."""
    state = state_of(request)
    authorize(request, state.tokens(admin=True))
    shape = 'expected {"decision": ..., "psi": {feature: number}, "triggered": bool}'
    if name not in state.model_names:
        raise HTTPProblem(404, f"no model {name[:100]!r} in this server")
    body = await read_json(request, state.options.max_body_bytes, state.options.body_seconds)
    if not isinstance(body, dict) or set(body) - {"decision", "psi", "triggered"}:
        raise HTTPProblem(422, shape)
    if any(body.get(k, "") is None for k in ("decision", "psi", "triggered")):
        raise HTTPProblem(422, f"{shape}: leave a key out rather than send null")
    psi, decision, triggered = body.get("psi", {}), body.get("decision"), body.get("triggered")
    if not isinstance(psi, dict):
        raise HTTPProblem(422, f"{shape}: psi must be an object of feature -> number")
    for feature, value in psi.items():
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise HTTPProblem(422, f"{shape}: psi[{feature[:100]!r}] is not a number")
    if decision is not None and decision not in DECISIONS:
        raise HTTPProblem(422, f"{shape}: decision must be one of {list(DECISIONS)}")
    if triggered is not None and not isinstance(triggered, bool):
        raise HTTPProblem(422, f"{shape}: triggered must be true or false")
    m = state.metrics
    for feature, value in psi.items():
        if value is not None:
            m.psi.labels(name, m.feature(name, str(feature))).set(float(value))
    if decision:
        m.checks.labels(name, decision).inc()
    if triggered:
        m.retrains.labels(name).inc()
    return {"accepted": True}


@router.post("/flush")
async def flush(request: Request) -> dict[str, int]:
    """Compact the spooled inference, feedback and shadow logs now; the rows actually written."""
    state = state_of(request)
    authorize(request, state.tokens(admin=True))
    loop = asyncio.get_running_loop()
    rows = await loop.run_in_executor(None, state.inference_log.flush)
    labels = await loop.run_in_executor(None, state.feedback_log.flush)
    shadow = await loop.run_in_executor(None, state.shadow_log.flush)
    logs = state.logs
    return {
        "inference_rows": rows.written,
        "feedback_rows": labels.written,
        "shadow_rows": shadow.written,
        "quarantined_rows": rows.quarantined + labels.quarantined + shadow.quarantined,
        "pending_segments": rows.pending + labels.pending + shadow.pending,
        # Since start-up, the background compaction's rows included.
        "inference_rows_total": state.inference_log.written,
        "feedback_rows_total": state.feedback_log.written,
        "shadow_rows_total": state.shadow_log.written,
        "quarantined_rows_total": sum(lg.quarantined for lg in logs),
    }
