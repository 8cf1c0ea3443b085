"""Health, readiness, metrics and what is being served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from retrainer.serving.http import JSONResponse, authorize
from retrainer.serving.routes.deps import state_of

router = APIRouter(include_in_schema=False)


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Ready when a model is served and the logs can take rows; the spools' state either way."""
    state = state_of(request)
    authorize(request, state.tokens())
    missing = {
        n: state.load_errors.get(n, "loading") for n in state.model_names if n not in state.models
    }
    logs = {
        lg.kind: {
            "state": lg.state,
            "spool_bytes": lg.bytes,
            "spool_limit_bytes": lg.max_bytes,
            "destination": lg.root,
            "last_error": lg.last_error or None,
        }
        for lg in state.logs
    }
    # A full shadow spool only stops mirroring (counted as the challenger's errors).
    ok = bool(state.models) and all(
        lg.state != "full" for lg in state.logs if lg is not state.shadow_log
    )
    body = {
        "ready": ok,
        "models": {n: h.version for n, h in state.models.items()},
        "not_loaded": missing,
        "logs": logs,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = state_of(request)
    authorize(request, state.tokens())
    return PlainTextResponse(
        generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = state_of(request)
    authorize(request, state.tokens())
    return {"models": [{"name": n, "version": h.version} for n, h in sorted(state.models.items())]}


@router.get("/models/{name}")
async def model_info(name: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    authorize(request, state.tokens())
    h = state.handle_for(name)
    return {
        "name": h.name,
        "version": h.version,
        "run_id": h.run_id,
        "classes": [str(c) for c in h.classes] if h.classes is not None else None,
        "inputs": [{"name": c.name, "type": c.type, "required": c.required} for c in h.columns],
    }
