"""The HTTP edge: errors, the bearer token, bounded bodies, content types and request ids.

Everything a request must get past before any model code runs, each refusal a 4xx that says
what was wrong and what to send instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

JSON = "application/json"
CSV = "text/csv"
CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
SERVER_ID = re.compile(r"([0-9a-f]{24}|[0-9a-f]{16})-([0-9a-f]{1,8})-([0-9a-f]{16})")
# MLflow's error codes for the statuses /invocations answers (its scoring server's shape).
MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
}


class JSONResponse(Response):
    """orjson-encoded JSON (numpy scalars included)."""

    media_type = JSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class HTTPProblem(Exception):
    """Answered as `{"error": message}` (on /invocations, MLflow's `{"error_code", "message"}`)."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        mlflow_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.mlflow_code = mlflow_code


def problem_response(request: Request, exc: HTTPProblem) -> Response:
    if request.url.path == "/invocations":
        code = exc.mlflow_code or MLFLOW_CODES.get(exc.status, "INTERNAL_ERROR")
        body: dict[str, Any] = {"error_code": code, "message": exc.message}
    else:
        body = {"error": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def authorize(request: Request, tokens: list[str]) -> None:
    """The bearer token, compared as bytes (a non-ASCII header is a wrong token, not a 500)."""
    if not tokens:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    raw = given.encode("latin-1", errors="replace")
    if not any(hmac.compare_digest(raw, t.encode()) for t in tokens):
        raise HTTPProblem(
            401,
            "missing or wrong bearer token (Authorization: Bearer <RETRAINER_API_TOKEN>)",
            {"WWW-Authenticate": "Bearer"},
        )


def media_type(request: Request, allowed: tuple[str, ...]) -> str:
    """The body's media type if the route documents it (charset utf-8 only), else 415."""
    raw = request.headers.get("content-type", "")
    mime, *params = (p.strip() for p in raw.split(";"))
    mime = mime.lower()
    for p in params:
        key, _, value = p.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            raise HTTPProblem(415, f"unsupported Content-Type parameter {p!r}; send {allowed[0]}")
    if mime not in allowed:
        raise HTTPProblem(
            415,
            f"Content-Type {raw or '(none)'!r} is not accepted here; send {' or '.join(allowed)}",
        )
    return mime


CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refused (413) as soon as it passes `limit`, announced or streamed (chunked);
    408 when it has not all arrived within `seconds` (a stalled client would otherwise hold its
    connection and handler for ever), and 499 (logged as the client's, never as a failed
    prediction) when the client closes the connection before it has sent it all."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise HTTPProblem(413, f"body of {length} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPProblem(413, f"body over the limit of {limit} bytes (streamed)")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPProblem(
            408,
            f"the body did not arrive within {seconds:g} s ({size} of "
            f"{length or 'an unannounced number of'} bytes); send it at once "
            "(RETRAINER_SERVING_BODY_SECONDS sets the limit)",
        ) from None
    except ClientDisconnect:
        raise HTTPProblem(
            CLIENT_CLOSED, f"the client closed the connection after {size} bytes of its body"
        ) from None
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"the body is not valid JSON: {exc}") from None


async def read_json(request: Request, limit: int, seconds: float) -> Any:
    media_type(request, (JSON,))
    return parse_json(await read_body(request, limit, seconds))


def client_request_id(request: Request) -> str | None:
    """The client's X-Request-ID, kept beside the server's id: bounded and plain, else 400."""
    value = request.headers.get("x-request-id")
    if value is None:
        return None
    if not CLIENT_ID.fullmatch(value):
        raise HTTPProblem(
            400,
            "X-Request-ID must be 1-128 characters of letters, digits and ._:/+=@- "
            f"(found {len(value)} characters); the server assigns its own request id anyway",
        )
    return value


class RequestIds:
    """Server request ids that carry their row count and answer time, and prove which model
    answered them.

    `<seconds since the epoch, 8 hex><random, 16 hex>-<rows in hex>-<HMAC>`: /feedback checks
    an id was issued by this deployment for this model and a row is within it, with no lookup
    (any replica, after any restart), and learns when it was answered, so the monitor can find
    the row of a label that arrives days later. Ids issued before the time was added (a random
    16-hex nonce) stay valid, with no answer time.
    """

    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"retrainer-request-id:" + key.encode()).digest()

    def _mac(self, model: str, nonce: str, rows: int) -> str:
        msg = f"{model}\x00{nonce}\x00{rows}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:16]

    def issue(self, model: str, rows: int, now: float | None = None) -> str:
        seconds = int(time.time() if now is None else now) & 0xFFFFFFFF
        nonce = f"{seconds:08x}{secrets.token_hex(8)}"
        return f"{nonce}-{rows:x}-{self._mac(model, nonce, rows)}"

    def check(self, model: str, request_id: str) -> tuple[int, float | None] | None:
        """(rows, answered at: epoch seconds, None for an id from before times were kept), or
        None if this model never issued the id."""
        m = SERVER_ID.fullmatch(request_id)
        if not m:
            return None
        nonce, rows = m.group(1), int(m.group(2), 16)
        if not hmac.compare_digest(m.group(3), self._mac(model, nonce, rows)):
            return None
        return rows, (float(int(nonce[:8], 16)) if len(nonce) == 24 else None)

    def rows(self, model: str, request_id: str) -> int | None:
        """How many rows the request had, or None if this model never issued the id."""
        checked = self.check(model, request_id)
        return None if checked is None else checked[0]
