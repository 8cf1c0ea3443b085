"""The serving API (FastAPI on uvicorn): the composition root.

Speed comes from three things: requests are checked against the signature in plain Python,
concurrent requests are predicted together in one call (a micro-batcher per model, which also
logs each batch durably before answering it), and responses are serialised with orjson. A
reload loads the new version off the event loop and swaps one reference, so no request fails or
waits during the swap. The pieces: `routes/` (one router per concern), `batcher`, `metrics`,
`state` (loaded versions), `model` and `signature`, `durable_log`, `http` (the edge), `openapi`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrainer.config.settings import Settings
from retrainer.serving import openapi
from retrainer.serving.http import HTTPProblem, JSONResponse, authorize, problem_response
from retrainer.serving.options import ServingOptions
from retrainer.serving.routes import admin, feedback, ops, rollout, scoring
from retrainer.serving.state import ServingState

log = logging.getLogger("retrainer.serving")
ENDPOINTS = (
    "serving answers POST /models/{name}/predict, /models/{name}/feedback, GET /models, "
    "/models/{name}, /health, /ready, /metrics, and /docs with the token"
)


def create_app(
    settings: Settings,
    models: list[str] | None = None,
    default_model: str | None = None,
    max_rows: int = 1000,
    max_body: int | None = None,
    options: ServingOptions | None = None,
) -> FastAPI:
    """The app serving the champion of each named model (default: every valid spec)."""
    if models is None:
        from retrainer.spec import iter_specs

        models = [
            s.name for _, s in iter_specs(settings.models_dir) if not isinstance(s, Exception)
        ]
    if default_model and default_model not in models:
        models = [*models, default_model]
    options = options or ServingOptions.from_env(settings)
    if max_body is not None:
        from dataclasses import replace

        options = replace(options, max_body_bytes=max_body)
    state = ServingState(settings, options, models, max_rows)
    if not options.log_enabled:
        log.warning(
            "RETRAINER_SERVING_LOG_ENABLED=false: requests are answered WITHOUT being logged "
            "(for measuring the log's cost only; drift monitoring sees nothing)"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Batches are small: OpenMP threads cost more to wake than they save, and they would
        # compete with the event loop for the cores: every thread that predicts holds itself to
        # one (batcher.timed_predict).
        loop = asyncio.get_running_loop()
        for lg in state.logs:  # recovers what a killed process left in the spool
            await loop.run_in_executor(None, lg.open)
        for name in state.model_names:
            try:
                handle = await loop.run_in_executor(None, state.load, name, None)
            except Exception as exc:  # a broken model must not keep the others from serving
                log.exception("could not load %s", name)
                state.load_errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            if handle is not None:
                state.install(handle)
                log.info("serving %s version %s", name, handle.version)
        # Everything loaded so far (mlflow, sklearn, the models) lives as long as the process:
        # keep it out of the cyclic GC, whose full passes over it stalled requests by ~100 ms.
        gc.collect()
        gc.freeze()
        yield
        for name in list(state.rollouts):
            state.end_rollout(name)
        for b in state.batchers.values():
            if b.task:
                b.task.cancel()
        for lg in state.logs:
            await loop.run_in_executor(None, lg.close)

    app = FastAPI(
        title="retrainer serving",
        version="1",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.serving = state

    @app.exception_handler(HTTPProblem)
    async def problem(request: Request, exc: HTTPProblem) -> Response:
        return problem_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def routing(request: Request, exc: StarletteHTTPException) -> Response:
        # An unknown path or a method a route does not take: the same error shape as every
        # other refusal (FastAPI's own is {"detail": ...}), saying what there is instead.
        if exc.status_code == 404:
            message = f"no such endpoint: {request.url.path[:200]!r}; {ENDPOINTS}"
        elif exc.status_code == 405:
            message = f"{request.method[:16]} is not allowed on {request.url.path[:200]!r}"
        else:
            message = str(exc.detail)
        return problem_response(
            request, HTTPProblem(exc.status_code, message, headers=dict(exc.headers or {}))
        )

    app.include_router(ops.router)
    app.include_router(scoring.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    app.include_router(rollout.router)
    if default_model:
        app.include_router(scoring.invocations_router(default_model))
    if options.docs is not False:
        _add_docs(app, state, default_model)
    return app


def _add_docs(app: FastAPI, state: ServingState, default_model: str | None) -> None:
    """/openapi.json and /docs, behind the token like everything but /health."""

    @app.get("/openapi.json", include_in_schema=False)
    async def schema(request: Request) -> dict[str, Any]:
        authorize(request, state.tokens())
        return openapi.build(state, default_model)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        authorize(request, state.tokens())
        return get_swagger_ui_html(openapi_url="/openapi.json", title="retrainer serving")
