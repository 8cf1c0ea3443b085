"""uvicorn's httptools protocol with a deadline for each request's head.

uvicorn times out an idle keep-alive connection, but not one that is opened and left silent, nor
a request line and headers trickled a byte at a time: each held a connection (a file descriptor,
a slot under any concurrency limit) for as long as the client liked, the "slowloris" attack. Here
a connection must deliver a whole request head within `head_seconds` of opening, and each later
request within `head_seconds` of its first byte, or it is answered 408 and closed. The body has
its own deadline (`http.read_body`); a healthy request's head arrives in one packet, so the
timer costs one `call_later` per connection and one per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_BODY = b"the request line and headers did not arrive in time\n"
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(TIMEOUT_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + TIMEOUT_BODY
)


class HeadDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that closes a connection whose request head is late (see module)."""

    head_seconds = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # a later request on a kept-alive connection
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no answer is being written
            self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


def with_head_deadline(seconds: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for uvicorn's `http=`, with this deadline."""
    attrs: dict[str, Any] = {"head_seconds": float(seconds)}
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), attrs)
