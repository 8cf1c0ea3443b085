"""A challenger taken out of traffic while its executor holds a predict call: the request is
failed at once (the route then answers it with the champion), never left waiting."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from retrainer.serving.batcher import Batcher


class Model:
    def predict(self, rows):
        return [0] * len(rows), None


def test_requests_in_a_shut_down_executor_fail_instead_of_hanging():
    async def scenario():
        model = Model()  # quick itself: the executor is what is busy
        executor = ThreadPoolExecutor(1)
        busy = threading.Event()
        executor.submit(busy.wait, 10)  # another call holds the executor's only worker
        batcher = Batcher(
            name="challenger", log_batch=lambda h, p: None, observe=lambda n: None, inline_rows=0
        )
        batcher.executor = executor
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(model, [{"x": 1}], "r1", None))
        await asyncio.sleep(0.05)  # its predict call waits in the executor's queue
        second = asyncio.ensure_future(batcher.submit(model, [{"x": 2}], "r2", None))
        await asyncio.sleep(0)  # queued in the batcher behind it
        # taken out of traffic, as RolloutChallenger.close does it
        batcher.close()
        executor.shutdown(wait=False, cancel_futures=True)
        busy.set()
        results = await asyncio.wait_for(
            asyncio.gather(first, second, return_exceptions=True), timeout=5
        )
        await asyncio.wait_for(batcher.task, timeout=5)
        return results, batcher.task

    (first, second), task = asyncio.run(scenario())
    assert isinstance(first, RuntimeError) and "taken out of traffic" in str(first), first
    assert isinstance(second, Exception), second  # refused by the shut-down executor, at once
    assert task is not None and task.done() and task.exception() is None


def test_a_batcher_that_is_cancelled_still_stops():
    async def scenario():
        batcher = Batcher(name="champion", log_batch=lambda h, p: None, observe=lambda n: None)
        batcher.start()
        await asyncio.sleep(0)
        assert batcher.task is not None
        batcher.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batcher.task

    asyncio.run(scenario())
