"""The serving API (FastAPI on uvicorn).

Speed comes from three things: requests are checked against the signature in plain Python,
concurrent requests are predicted together in one call (a micro-batcher per model that drains
whatever queued while the previous batch ran, so a lone request never waits), and responses are
serialised with orjson. A reload loads the new version off the event loop and swaps one
reference, so no request fails or waits during the swap.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from retrainer.serving.inference_log import BatchedParquetLog, now_iso
from retrainer.serving.model import InputError, LoadedModel, load_version, parse_payload
from retrainer.settings import Settings

log = logging.getLogger("retrainer.serving")


class JSONResponse(Response):
    """orjson-encoded JSON (numpy scalars included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


SCORING_ENDPOINTS = ("predict", "invocations")
ERROR_REASONS = ("input", "request", "predict")
# The monitor's decisions (retrainer.monitoring; tests/unit/test_infra.py keeps them equal).
MONITOR_DECISIONS = ("ok", "warn", "retrain", "insufficient_data", "schema_changed", "no_champion")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "retrainer_requests", "Requests answered", ["model", "endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "retrainer_request_errors",
            "Requests answered with an error",
            ["model", "endpoint", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "retrainer_request_latency_seconds",
            "Request latency",
            ["model", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter("retrainer_rows_predicted", "Rows predicted", ["model"], registry=r)
        self.batch_rows = Histogram(
            "retrainer_batch_rows",
            "Rows per predict call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=r,
        )
        self.version = Gauge(
            "retrainer_model_version", "Model version being served", ["model"], registry=r
        )
        self.predictions = Counter(
            "retrainer_predictions",
            "Predictions by class (classification)",
            ["model", "label"],
            registry=r,
        )
        self.values = Histogram(
            "retrainer_prediction_value", "Predicted values (regression)", ["model"], registry=r
        )
        self.reloads = Counter(
            "retrainer_reloads", "Model reloads", ["model", "outcome"], registry=r
        )
        self.log_dropped = Counter(
            "retrainer_inference_log_dropped", "Inference log records dropped", registry=r
        )
        # Reported by the monitor DAG after each check (POST /models/<name>/drift), so one
        # scrape target carries traffic, drift and retrain events for dashboards and alerts.
        self.psi = Gauge(
            "retrainer_psi", "PSI per feature at the last check", ["model", "feature"], registry=r
        )
        self.checks = Counter(
            "retrainer_monitor_checks",
            "Monitor checks by decision",
            ["model", "decision"],
            registry=r,
        )
        self.retrains = Counter(
            "retrainer_retrains_triggered",
            "Retrains triggered by the monitor",
            ["model"],
            registry=r,
        )

    def start_at_zero(self, model: str) -> None:
        """Create a served model's counters for every known label value at 0: a series that
        appears only at its first increment is invisible to rate()/increase() for that step."""
        for endpoint in SCORING_ENDPOINTS:
            self.requests.labels(model, endpoint, "200")
            for reason in ERROR_REASONS:
                self.errors.labels(model, endpoint, reason)
        self.rows.labels(model)
        for outcome in ("ok", "failed"):
            self.reloads.labels(model, outcome)
        for decision in MONITOR_DECISIONS:
            self.checks.labels(model, decision)
        self.retrains.labels(model)


@dataclass
class _Pending:
    handle: LoadedModel
    rows: list[dict[str, Any]]
    future: asyncio.Future[tuple[list[Any], list[dict[str, float]] | None]]


@dataclass
class Batcher:
    """Predicts queued requests together; the batch is whatever arrived while the last one ran."""

    metrics: Metrics
    name: str
    max_rows: int = 512
    inline_rows: int = 64
    gather_rounds: int = 2
    queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def submit(
        self, handle: LoadedModel, rows: list[dict[str, Any]]
    ) -> tuple[list[Any], list[dict[str, float]] | None]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(handle, rows, fut))
        return await fut  # type: ignore[no-any-return]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            # Let the loop parse the requests already waiting in the sockets, so they join this
            # batch instead of each paying for a predict call of its own.
            for _ in range(self.gather_rounds):
                await asyncio.sleep(0)
            batch = [first]
            n = len(first.rows)
            while n < self.max_rows and not self.queue.empty():
                item = self.queue.get_nowait()
                batch.append(item)
                n += len(item.rows)
            # Rows checked against one version are predicted by that version (a reload may swap
            # the handle between check and predict).
            groups: dict[int, list[_Pending]] = {}
            for item in batch:
                groups.setdefault(id(item.handle), []).append(item)
            for items in groups.values():
                rows = [r for it in items for r in it.rows]
                try:
                    if len(rows) <= self.inline_rows:  # ~1 ms: cheaper than a thread hop
                        labels, probs = items[0].handle.predict(rows)
                    else:
                        labels, probs = await loop.run_in_executor(
                            None, items[0].handle.predict, rows
                        )
                except Exception as exc:
                    for it in items:
                        if not it.future.done():
                            it.future.set_exception(exc)
                    continue
                self.metrics.batch_rows.labels(self.name).observe(len(rows))
                start = 0
                for it in items:
                    end = start + len(it.rows)
                    if not it.future.done():
                        it.future.set_result(
                            (labels[start:end], probs[start:end] if probs is not None else None)
                        )
                    start = end


class ServingState:
    def __init__(
        self, settings: Settings, model_names: list[str], max_rows: int, max_body: int
    ) -> None:
        self.settings = settings
        self.model_names = model_names
        self.max_rows = max_rows
        self.max_body = max_body
        self.models: dict[str, LoadedModel] = {}
        self.load_errors: dict[str, str] = {}
        self.metrics = Metrics()
        self.batchers: dict[str, Batcher] = {}
        self.inference_log = BatchedParquetLog(
            settings.inference_log_root,
            "requests",
            on_drop=lambda n: self.metrics.log_dropped.inc(n),
        )
        self.feedback_log = BatchedParquetLog(
            settings.feedback_root, "feedback", flush_rows=500, flush_seconds=2.0
        )
        self.token = settings.api_token_from_env()
        self.admin_token = settings.serving_admin_token()
        self._reload_lock = asyncio.Lock()

    def champion_version(self, name: str) -> str | None:
        from retrainer.constants import ALIAS_CHAMPION
        from retrainer.pipeline import mlflow_client
        from retrainer.registry import version_by_alias

        mv = version_by_alias(mlflow_client(self.settings), name, ALIAS_CHAMPION)
        return None if mv is None else str(mv.version)

    def load(self, name: str, version: str | None = None) -> LoadedModel | None:
        version = version or self.champion_version(name)
        if version is None:
            self.load_errors[name] = "no champion registered yet"
            return None
        return load_version(name, version, self.settings.tracking_uri)

    def install(self, handle: LoadedModel) -> None:
        self.models[handle.name] = handle  # one reference swap: in-flight requests keep theirs
        self.load_errors.pop(handle.name, None)
        self.metrics.start_at_zero(handle.name)
        with suppress(ValueError):
            self.metrics.version.labels(handle.name).set(float(handle.version))
        if handle.name not in self.batchers:
            batcher = Batcher(self.metrics, handle.name)
            batcher.start()
            self.batchers[handle.name] = batcher


def create_app(
    settings: Settings,
    models: list[str] | None = None,
    default_model: str | None = None,
    max_rows: int = 1000,
    max_body: int = 2_000_000,
) -> FastAPI:
    """The app serving the champion of each named model (default: every valid spec)."""
    if models is None:
        from retrainer.spec import iter_specs

        models = [
            s.name for _, s in iter_specs(settings.models_dir) if not isinstance(s, Exception)
        ]
    if default_model and default_model not in models:
        models = [*models, default_model]
    state = ServingState(settings, models, max_rows, max_body)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from threadpoolctl import threadpool_limits

        # Batches are small: OpenMP threads cost more to wake than they save, and they would
        # compete with the event loop for the cores.
        threadpool_limits(1)
        loop = asyncio.get_running_loop()
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
        for b in state.batchers.values():
            if b.task:
                b.task.cancel()
        await loop.run_in_executor(None, state.inference_log.close)
        await loop.run_in_executor(None, state.feedback_log.close)

    app = FastAPI(
        title="retrainer serving",
        version="1",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.serving = state

    @app.exception_handler(HTTPProblem)
    async def problem(request: Request, exc: HTTPProblem) -> Response:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    def authorize(request: Request, admin: bool = False) -> None:
        expected = [t for t in (state.token, state.admin_token if admin else None) if t]
        if not expected:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else ""
        if not any(hmac.compare_digest(given, t) for t in expected):
            raise HTTPProblem(
                401, "missing or wrong bearer token (Authorization: Bearer <RETRAINER_API_TOKEN>)"
            )

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > state.max_body:
            raise HTTPProblem(413, f"body of {length} bytes is over the limit of {state.max_body}")
        body = await request.body()
        if len(body) > state.max_body:
            raise HTTPProblem(
                413, f"body of {len(body)} bytes is over the limit of {state.max_body}"
            )
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPProblem(400, f"the body is not valid JSON: {exc}") from None

    def handle_for(name: str) -> LoadedModel:
        handle = state.models.get(name)
        if handle is None:
            if name in state.model_names:
                why = state.load_errors.get(name, "not loaded")
                raise HTTPProblem(503, f"model {name!r} is not being served: {why}")
            raise HTTPProblem(404, f"no model {name!r}; served: {sorted(state.models)}")
        return handle

    async def score(
        name: str, request: Request, endpoint: str
    ) -> tuple[LoadedModel, str, list[Any], list[dict[str, float]] | None]:
        started = time.perf_counter()
        status = "200"
        try:
            authorize(request)
            handle = handle_for(name)
            rows = parse_payload(await read_json(request))
            handle.check_rows(rows, state.max_rows)
            labels, probs = await state.batchers[name].submit(handle, rows)
        except InputError as exc:
            status = "422"
            state.metrics.errors.labels(name, endpoint, "input").inc()
            raise HTTPProblem(422, str(exc)) from None
        except HTTPProblem as exc:
            status = str(exc.status)
            state.metrics.errors.labels(name, endpoint, "request").inc()
            raise
        except Exception as exc:
            status = "500"
            state.metrics.errors.labels(name, endpoint, "predict").inc()
            log.exception("prediction failed for %s", name)
            raise HTTPProblem(500, f"prediction failed: {type(exc).__name__}: {exc}") from None
        finally:
            state.metrics.requests.labels(name, endpoint, status).inc()
            state.metrics.latency.labels(name, endpoint).observe(time.perf_counter() - started)
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        _record(state, handle, request_id, rows, labels, probs)
        return handle, request_id, labels, probs

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> Response:
        authorize(request)
        missing = {
            n: state.load_errors.get(n, "loading")
            for n in state.model_names
            if n not in state.models
        }
        body = {
            "ready": bool(state.models),
            "models": {n: h.version for n, h in state.models.items()},
            "not_loaded": missing,
        }
        return JSONResponse(body, status_code=200 if state.models else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return PlainTextResponse(
            generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    @app.get("/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {
            "models": [{"name": n, "version": h.version} for n, h in sorted(state.models.items())]
        }

    @app.get("/models/{name}")
    async def model_info(name: str, request: Request) -> dict[str, Any]:
        authorize(request)
        h = handle_for(name)
        return {
            "name": h.name,
            "version": h.version,
            "run_id": h.run_id,
            "classes": [str(c) for c in h.classes] if h.classes is not None else None,
            "inputs": [{"name": c.name, "type": c.type, "required": c.required} for c in h.columns],
        }

    @app.post("/models/{name}/predict")
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
        return JSONResponse(
            body, headers={"x-request-id": request_id, "x-model-version": handle.version}
        )

    if default_model:

        @app.post("/invocations")
        async def invocations(request: Request) -> Response:
            """MLflow's scoring protocol: same payloads, `predictions` as `mlflow models serve`."""
            handle, request_id, labels, _ = await score(default_model, request, "invocations")
            body = {
                "predictions": labels,
                "model_version": handle.version,
                "request_id": request_id,
            }
            return JSONResponse(
                body, headers={"x-request-id": request_id, "x-model-version": handle.version}
            )

        @app.get("/ping")
        async def ping() -> dict[str, str]:
            return {"status": "ok"}

    @app.post("/models/{name}/feedback")
    async def feedback(name: str, request: Request) -> dict[str, Any]:
        """Late ground truth: {"request_id": ..., "label": ...} or {"labels": [{...}, ...]}."""
        authorize(request)
        handle_for(name)
        body = await read_json(request)
        items = body.get("labels") if isinstance(body, dict) and "labels" in body else [body]
        if not isinstance(items, list) or not items:
            raise HTTPProblem(
                422, 'expected {"request_id": ..., "label": ...} or {"labels": [...]}'
            )
        records = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "request_id" not in item or "label" not in item:
                raise HTTPProblem(
                    422, f"feedback item {i}: expected keys request_id and label (row optional)"
                )
            row = item.get("row", 0)
            if not isinstance(row, int) or isinstance(row, bool) or row < 0:
                raise HTTPProblem(422, f"feedback item {i}: row must be a non-negative integer")
            records.append(
                {
                    "_request_id": str(item["request_id"]),
                    "_row": row,
                    "_label": item["label"],
                    "_ts": now_iso(),
                }
            )
        state.feedback_log.append(name, records)
        return {"accepted": len(records)}

    @app.post("/reload")
    async def reload(request: Request) -> Response:
        """Load the champion (or {"version": v}) of one model ({"model": name}) or of all, then swap."""
        authorize(request, admin=True)
        raw = await request.body()
        body = orjson.loads(raw) if raw.strip() else {}
        names = [body["model"]] if body.get("model") else list(state.model_names)
        loop = asyncio.get_running_loop()
        results: dict[str, Any] = {}
        failed = False
        async with state._reload_lock:
            for name in names:
                if name not in state.model_names:
                    raise HTTPProblem(404, f"no model {name!r} in this server")
                old = state.models.get(name)
                try:
                    handle = await loop.run_in_executor(None, state.load, name, body.get("version"))
                except Exception as exc:
                    failed = True
                    state.metrics.reloads.labels(name, "failed").inc()
                    log.exception(
                        "reload of %s failed; still serving %s",
                        name,
                        old.version if old else "nothing",
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

    @app.post("/models/{name}/drift")
    async def drift(name: str, request: Request) -> dict[str, Any]:
        """The monitor's last check: {"decision": ..., "psi": {feature: value}, "triggered": bool}."""
        authorize(request, admin=True)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise HTTPProblem(422, 'expected {"decision": ..., "psi": {...}, "triggered": bool}')
        psi = body.get("psi") or {}
        for feature, value in psi.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                state.metrics.psi.labels(name, str(feature)).set(float(value))
        if body.get("decision"):
            state.metrics.checks.labels(name, str(body["decision"])).inc()
        if body.get("triggered"):
            state.metrics.retrains.labels(name).inc()
        return {"accepted": True}

    @app.post("/flush")
    async def flush(request: Request) -> dict[str, int]:
        """Write the buffered inference log and feedback now (before a check, in tests, demos)."""
        authorize(request, admin=True)
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, state.inference_log.flush)
        labels = await loop.run_in_executor(None, state.feedback_log.flush)
        return {"inference_rows": rows, "feedback_rows": labels}

    return app


def _record(
    state: ServingState,
    handle: LoadedModel,
    request_id: str,
    rows: list[dict[str, Any]],
    labels: list[Any],
    probs: list[dict[str, float]] | None,
) -> None:
    """Append to the inference log and the prediction metrics (in memory; written elsewhere)."""
    ts = now_iso()
    records = []
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        rec = dict(row)
        rec.update(
            _request_id=request_id, _row=i, _ts=ts, _model_version=handle.version, _prediction=label
        )
        if probs is not None:
            rec["_score"] = probs[i][str(label)]
        records.append(rec)
    state.inference_log.append(handle.name, records)
    state.metrics.rows.labels(handle.name).inc(len(rows))
    if probs is None:
        for v in labels:
            state.metrics.values.labels(handle.name).observe(v)
    else:
        for lab in labels:
            state.metrics.predictions.labels(handle.name, str(lab)).inc()
