"""The micro-batcher: concurrent requests for one model predicted together, then logged.

The batch is whatever queued while the previous one ran, so a lone request never waits. After
the predict call, the whole micro-batch is appended to the durable log in one write, and only
then are its requests answered: a request whose rows could not be logged gets an error, never a
prediction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from retrainer.serving.model import LoadedModel
from retrainer.serving.signature import InputError, SchemaMismatch

Prediction = tuple[list[Any], list[dict[str, float]] | None]


@dataclass
class Pending:
    handle: LoadedModel
    rows: list[dict[str, Any]]
    request_id: str
    client_id: str | None
    future: asyncio.Future[Prediction]


# Logs one predicted micro-batch (items, with each item's slice of labels and probabilities).
LogBatch = Callable[
    [LoadedModel, list[tuple[Pending, list[Any], list[dict[str, float]] | None]]], None
]


@dataclass
class Batcher:
    name: str
    log_batch: LogBatch
    observe: Callable[[int], None]
    log_in_thread: bool = False  # fsync'd logs block: keep them off the event loop
    max_rows: int = 512
    inline_rows: int = 64
    gather_rounds: int = 2
    queue: asyncio.Queue[Pending] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def submit(
        self,
        handle: LoadedModel,
        rows: list[dict[str, Any]],
        request_id: str,
        client_id: str | None,
    ) -> Prediction:
        fut: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(handle, rows, request_id, client_id, fut))
        return await fut

    async def _run(self) -> None:
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
            groups: dict[int, list[Pending]] = {}
            for item in batch:
                groups.setdefault(id(item.handle), []).append(item)
            for items in groups.values():
                await self._predict_and_log(items)

    async def _predict_and_log(self, items: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        handle = items[0].handle
        rows = [r for it in items for r in it.rows]
        try:
            if len(rows) <= self.inline_rows:  # ~1 ms: cheaper than a thread hop
                labels, probs = handle.predict(rows)
            else:
                labels, probs = await loop.run_in_executor(None, handle.predict, rows)
        except Exception as exc:
            if len(items) > 1:  # one request's rows never fail the others': score each alone
                for it in items:
                    await self._predict_and_log([it])
            elif not items[0].future.done():
                items[0].future.set_exception(unscorable(exc))
            return
        try:
            self.observe(len(rows))
            parts = []
            start = 0
            for it in items:
                end = start + len(it.rows)
                parts.append(
                    (it, labels[start:end], probs[start:end] if probs is not None else None)
                )
                start = end
            if self.log_in_thread:
                await loop.run_in_executor(None, self.log_batch, handle, parts)
            else:
                self.log_batch(handle, parts)
        except Exception as exc:
            for it in items:
                if not it.future.done():
                    it.future.set_exception(exc)
            return
        for it, lab, pr in parts:
            if not it.future.done():
                it.future.set_result((lab, pr))


def unscorable(exc: Exception) -> Exception:
    """A request whose own rows the model refuses (sklearn's input checks: a value that overflows
    float64 once scaled, say) is the client's to fix: a 4xx naming the cause, not a 500."""
    if isinstance(exc, ValueError) and not isinstance(exc, InputError):
        return SchemaMismatch(f"the model cannot score these rows: {exc}")
    return exc
