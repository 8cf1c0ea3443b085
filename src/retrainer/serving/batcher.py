"""The micro-batcher: concurrent requests for one model predicted together, then logged.

The batch is whatever queued while the previous one ran, so a lone request never waits. After
the predict call, the whole micro-batch is appended to the durable log in one write, and only
then are its requests answered: a request whose rows could not be logged gets an error, never a
prediction.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import suppress
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
# Told of each predict call: the version, rows, wall seconds and CPU seconds, whether it worked.
ObservePredict = Callable[[LoadedModel, int, float, float, bool], None]
# Run in the executor after a predict call there (the client already has its answer): the version
# and the rows it predicted.
AfterPredict = Callable[[LoadedModel, list[dict[str, Any]]], None]


_one_thread = threading.local()


def one_openmp_thread() -> None:
    """One OpenMP/BLAS thread for the calling thread, set at its first predict call. OpenMP's
    thread count is per thread, and the model's OpenMP runtime is only there once the model is
    loaded: a thread predicting without it starts a team of one thread per core, whose workers
    busy-wait after each call (measured on two cores: one core kept spinning by the champion,
    another by a shadow predicting 45 rows/s, which halved the champion's throughput)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def timed_predict(
    handle: LoadedModel, rows: list[dict[str, Any]], observe: ObservePredict
) -> Prediction:
    """`handle.predict`, its wall and CPU time reported. CPU time is the calling thread's
    (`time.thread_time`): predict runs with one BLAS/OpenMP thread, in the thread that calls it."""
    if not getattr(_one_thread, "set", False):
        one_openmp_thread()
        _one_thread.set = True
    wall, cpu = time.perf_counter(), time.thread_time()
    ok = False
    try:
        result = handle.predict(rows)
        ok = True
        return result
    finally:
        observe(handle, len(rows), time.perf_counter() - wall, time.thread_time() - cpu, ok)


def _ignore(handle: LoadedModel, rows: int, wall: float, cpu: float, ok: bool) -> None:
    return None


@dataclass
class Batcher:
    name: str
    log_batch: LogBatch
    observe: Callable[[int], None]
    log_in_thread: bool = False  # fsync'd logs block: keep them off the event loop
    max_rows: int = 512
    inline_rows: int = 64
    gather_rounds: int = 2
    observe_predict: ObservePredict = _ignore
    executor: Executor | None = None  # where predict calls too big to run inline go
    after_predict: AfterPredict | None = None  # e.g. the canary's paired timings
    queue: asyncio.Queue[Pending | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    closed: bool = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        """Take no more requests; those already queued are still predicted and answered."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    async def submit(
        self,
        handle: LoadedModel,
        rows: list[dict[str, Any]],
        request_id: str,
        client_id: str | None,
    ) -> Prediction:
        if self.closed:
            raise RuntimeError(f"{self.name}: this version was taken out of traffic")
        fut: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        await self.queue.put(Pending(handle, rows, request_id, client_id, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            if first is None:
                return
            # Let the loop parse the requests already waiting in the sockets, so they join this
            # batch instead of each paying for a predict call of its own.
            for _ in range(self.gather_rounds):
                await asyncio.sleep(0)
            batch = [first]
            n = len(first.rows)
            while n < self.max_rows and not self.queue.empty():
                item = self.queue.get_nowait()
                if item is None:  # closed: finish this batch, then stop
                    self.queue.put_nowait(None)
                    break
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
                labels, probs = timed_predict(handle, rows, self.observe_predict)
            else:
                labels, probs = await loop.run_in_executor(
                    self.executor, timed_predict, handle, rows, self.observe_predict
                )
                if self.after_predict is not None:  # queued behind it, never awaited
                    with suppress(RuntimeError):  # the executor shut down meanwhile
                        loop.run_in_executor(self.executor, self.after_predict, handle, rows)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the batcher itself is stopped
            # Its executor was shut down under the call (a challenger taken out of traffic,
            # RolloutChallenger.close): fail these requests, which the champion then answers,
            # instead of ending this task and leaving them, and the queued ones, unanswered.
            for it in items:
                if not it.future.done():
                    it.future.set_exception(
                        RuntimeError(f"{self.name}: taken out of traffic while predicting")
                    )
            return
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
                if not it.future.done():  # a request given up on (the champion answered it)
                    parts.append(
                        (it, labels[start:end], probs[start:end] if probs is not None else None)
                    )
                start = end
            if not parts:
                return
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
