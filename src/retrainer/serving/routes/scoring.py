"""Predictions: /models/<name>/predict, and MLflow's scoring protocol at /invocations."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from retrainer.serving.durable_log import SpoolFull
from retrainer.serving.http import (
    CLIENT_CLOSED,
    CSV,
    JSON,
    HTTPProblem,
    JSONResponse,
    authorize,
    client_request_id,
    media_type,
    parse_json,
    read_body,
)
from retrainer.serving.model import LoadedModel
from retrainer.serving.routes.deps import state_of
from retrainer.serving.signature import InputError, parse_csv, parse_payload
from retrainer.serving.state import ServingState

log = logging.getLogger("retrainer.serving")
router = APIRouter(include_in_schema=False)
RETRY_AFTER = "5"


async def score(
    name: str, request: Request, endpoint: str, csv: bool = False
) -> tuple[LoadedModel, str, list[Any], list[dict[str, float]] | None]:
    """Check, predict (batched) and log one request; every refusal is a 4xx naming the field."""
    state = state_of(request)
    m = state.metrics
    label = m.model(name)
    started = time.perf_counter()
    status = "200"
    rows: list[Any] = []
    try:
        authorize(request, state.tokens())
        handle = state.handle_for(name)
        client_id = client_request_id(request)
        mime = media_type(request, (JSON, CSV) if csv else (JSON,))
        body = await read_body(request, state.options.max_body_bytes, state.options.body_seconds)
        rows = parse_csv(body, handle.schema) if mime == CSV else parse_payload(parse_json(body))
        request_id = state.request_ids.issue(name, len(rows))
        handle, labels, probs = await answer(state, handle, rows, request_id, client_id)
    except InputError as exc:
        status = "400" if endpoint == "invocations" else "422"
        m.errors.labels(label, endpoint, "input").inc()
        m.refused.labels(label).inc(max(len(rows), 1))
        raise HTTPProblem(int(status), str(exc), mlflow_code=exc.mlflow_code) from None
    except SpoolFull as exc:
        status = "503"
        m.errors.labels(label, endpoint, "log_full").inc()
        raise HTTPProblem(
            503,
            f"not answering without logging: {exc}; retry later",
            {"Retry-After": RETRY_AFTER},
        ) from None
    except HTTPProblem as exc:
        status = str(exc.status)
        reason = "disconnect" if exc.status == CLIENT_CLOSED else "request"
        m.errors.labels(label, endpoint, reason).inc()
        raise
    except Exception as exc:
        status = "500"
        m.errors.labels(label, endpoint, "predict").inc()
        state.champion_failed(name)
        log.exception("prediction failed for %s", name)
        raise HTTPProblem(500, f"prediction failed: {type(exc).__name__}: {exc}") from None
    finally:
        m.requests.labels(label, endpoint, status).inc()
        m.latency.labels(label, endpoint).observe(time.perf_counter() - started)
    return handle, request_id, labels, probs


async def answer(
    state: ServingState,
    champion: LoadedModel,
    rows: list[Any],
    request_id: str,
    client_id: str | None,
) -> tuple[LoadedModel, list[Any], list[dict[str, float]] | None]:
    """The version that answers (a canary's challenger, else the champion), checked against
    that version's signature. Whatever the challenger fails is answered by the champion, once:
    a failed request was not logged, so each answered request is logged exactly once."""
    rollout = state.canary(champion.name, rows, request_id)
    if rollout is not None:
        challenger = rollout.challenger
        try:
            challenger.handle.check_rows(rows, state.max_rows)
        except InputError as exc:
            champion.check_rows(rows, state.max_rows)  # both refuse: the client's to fix (4xx)
            state.challenger_failed(rollout, exc)
        else:
            state.inference_log.check_capacity()
            try:
                # A challenger that hangs or crawls must not hold the request: past the limit it
                # is a challenger failure, the champion answers, and the abandoned request is
                # not logged as the challenger's (its future is cancelled: the batcher skips it).
                async with asyncio.timeout(state.options.challenger_seconds):
                    labels, probs = await challenger.batcher.submit(
                        challenger.handle, rows, request_id, client_id
                    )
                return challenger.handle, labels, probs
            except SpoolFull:
                raise  # the log's trouble, not the challenger's: 503 as for the champion
            except TimeoutError:
                state.challenger_failed(
                    rollout,
                    TimeoutError(
                        f"no answer within {state.options.challenger_seconds:g} s "
                        "(RETRAINER_SERVING_CHALLENGER_SECONDS)"
                    ),
                )
            except Exception as exc:
                state.challenger_failed(rollout, exc)
    champion.check_rows(rows, state.max_rows)
    state.inference_log.check_capacity()
    labels, probs = await state.batchers[champion.name].submit(
        champion, rows, request_id, client_id
    )
    state.mirror(champion, request_id, rows, labels, probs)
    return champion, labels, probs


def _headers(handle: LoadedModel, request_id: str, request: Request) -> dict[str, str]:
    headers = {"x-request-id": request_id, "x-model-version": handle.version}
    client = request.headers.get("x-request-id")
    if client:
        headers["x-client-request-id"] = client
    return headers


@router.post("/models/{name}/predict")
async def predict(name: str, request: Request) -> Response:
    handle, request_id, labels, probs = await score(name, request, "predict")
    if probs is None:
        preds: list[Any] = [{"value": v} for v in labels]
    else:
        preds = [
            {"label": lab, "probability": p[str(lab)], "probabilities": p}
            for lab, p in zip(labels, probs, strict=True)
        ]
    body = {
        "model": name,
        "model_version": handle.version,
        "request_id": request_id,
        "predictions": preds,
    }
    return JSONResponse(body, headers=_headers(handle, request_id, request))


def invocations_router(default_model: str) -> APIRouter:
    """MLflow's scoring protocol for one model: same payloads (JSON, CSV), statuses and errors."""
    mlflow = APIRouter(include_in_schema=False)

    @mlflow.post("/invocations")
    async def invocations(request: Request) -> Response:
        handle, request_id, labels, _ = await score(default_model, request, "invocations", csv=True)
        body = {"predictions": labels, "model_version": handle.version, "request_id": request_id}
        return JSONResponse(body, headers=_headers(handle, request_id, request))

    @mlflow.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    return mlflow
