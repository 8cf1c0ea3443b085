"""The shadow's predictions, in a child process of their own.

A challenger scoring mirrored rows in a thread of the serving process holds the GIL while it
builds matrices and walks trees; the event loop, which gives the GIL up at every socket call,
then waits for it (Python's convoy effect): a 10% shadow cost the champion half its throughput
and 20-30 ms of p99 on a quiet machine. In a process of its own the shadow costs the serving
process only the pickling of the mirrored rows and of the answers.

The child also holds the champion, so the latency check compares like with like: on a share of
the batches it times both versions on the same rows, back to back, in turns (`paired` in the
result). The challenger's own timings of mirrored batches (hundreds of rows) are not comparable
with the champion's live calls (a request or a few).
"""

from __future__ import annotations

import os
import pickle
import time
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from retrainer.serving.child import child_pool
from retrainer.serving.model import LoadedModel

# Paired timings: one batch in PAIRED_EVERY (about one a second at a quarter second a batch),
# on at most PAIRED_ROWS of its rows. Two more predict calls each: measured on two cores, timing
# every batch added 8 ms to the champion's p99 at a 10% shadow, through CPU alone.
PAIRED_EVERY = 4
PAIRED_ROWS = 64

Answer = tuple[list[Any], list[dict[str, float]] | None]


@dataclass
class Call:
    """One predict call of the challenger in the child: its wall and CPU time."""

    rows: int
    wall: float
    cpu: float
    ok: bool


@dataclass
class Scored:
    """The child's answer for one batch of mirrored requests, in their order."""

    answers: list[Answer | None]  # None: the challenger could not score that request
    calls: list[Call] = field(default_factory=list)
    paired: tuple[float, float] | None = None  # (challenger, champion) seconds on the same rows


_models: dict[str, LoadedModel] = {}
_warm: list[bool] = []  # the champion has predicted once in this process


def _start(payload: bytes) -> None:
    """In the child (niced: the paired timings are taken in here, so both sides see the same
    priority): the two versions, with one OpenMP thread."""
    from retrainer.serving.batcher import one_openmp_thread

    os.environ["OMP_NUM_THREADS"] = "1"  # read when unpickling loads the models' OpenMP runtime
    challenger, champion = pickle.loads(payload)
    one_openmp_thread()  # and limited once it is loaded (see its docstring)
    _models["challenger"], _models["champion"] = challenger, champion


def _ready() -> bool:
    return bool(_models)


def _timed(handle: LoadedModel, rows: list[dict[str, Any]], calls: list[Call]) -> Answer:
    wall, cpu = time.perf_counter(), time.thread_time()
    ok = False
    try:
        answer = handle.predict(rows)
        ok = True
        return answer
    finally:
        calls.append(Call(len(rows), time.perf_counter() - wall, time.thread_time() - cpu, ok))


def _clock(handle: LoadedModel, rows: list[dict[str, Any]]) -> float:
    wall = time.perf_counter()
    handle.predict(rows)
    return time.perf_counter() - wall


def score(requests: list[list[dict[str, Any]]], max_rows: int, pair: int) -> Scored:
    """In the child: check each request against the challenger's signature, predict the valid
    ones in one call (each alone if that fails), and, when `pair` is not 0, time the champion
    and the challenger on the same rows (the champion first when `pair` is odd)."""
    challenger = _models["challenger"]
    answers: list[Answer | None] = [None] * len(requests)
    calls: list[Call] = []
    valid = []
    for i, rows in enumerate(requests):
        try:
            challenger.check_rows(rows, max_rows)
            valid.append(i)
        except Exception:
            continue
    groups = [valid] if valid else []
    while groups:
        group = groups.pop()
        try:
            labels, probs = _timed(challenger, [r for i in group for r in requests[i]], calls)
        except Exception:
            if len(group) > 1:
                groups += [[i] for i in group]
            continue
        start = 0
        for i in group:
            end = start + len(requests[i])
            answers[i] = (labels[start:end], probs[start:end] if probs is not None else None)
            start = end
    paired = None
    scored = [r for i, rows in enumerate(requests) if answers[i] is not None for r in rows]
    if pair and scored:
        try:
            paired = _pair(
                challenger, _models["champion"], scored[:PAIRED_ROWS], champion_first=pair % 2 == 1
            )
        except Exception:  # the champion refuses rows the challenger took: no pair this time
            paired = None
    return Scored(answers, calls, paired)


def _pair(
    challenger: LoadedModel, champion: LoadedModel, rows: list[dict[str, Any]], champion_first: bool
) -> tuple[float, float]:
    if not _warm:  # a version's first call pays one-off costs (validation set-up, caches)
        champion.predict(rows)
        challenger.predict(rows)  # in canary, nothing else has called it in this process
        _warm.append(True)
    if champion_first:
        theirs = _clock(champion, rows)
        return _clock(challenger, rows), theirs
    ours = _clock(challenger, rows)
    return ours, _clock(champion, rows)


def paired(rows: list[dict[str, Any]], turn: int) -> tuple[float, float]:
    """In the child: both versions timed on rows the challenger answered in canary (the champion
    first on odd turns)."""
    return _pair(_models["challenger"], _models["champion"], rows, champion_first=turn % 2 == 1)


class ShadowProcess:
    """One child process holding the challenger and the champion, scoring one batch at a time."""

    def __init__(self, challenger: LoadedModel, champion: LoadedModel) -> None:
        self.challenger, self.champion = challenger, champion
        payload = pickle.dumps((challenger, champion), protocol=pickle.HIGHEST_PROTOCOL)
        self.pool = child_pool(_start, payload)
        self.pool.submit(_ready)  # start it now: its imports take seconds of CPU
        self.pairs = 0
        self.closed = False

    def score(
        self, requests: list[list[dict[str, Any]]], max_rows: int, pair: bool
    ) -> Future[Scored]:
        """Score one batch; with `pair`, also time both versions on its rows (in turns)."""
        if pair:
            self.pairs += 1
        return self.pool.submit(score, requests, max_rows, self.pairs if pair else 0)

    def pair(self, rows: list[dict[str, Any]]) -> Future[tuple[float, float]]:
        """Time both versions on these rows (in turns): canary rows the challenger answered."""
        self.pairs += 1
        return self.pool.submit(paired, rows, self.pairs)

    @property
    def broken(self) -> bool:
        """Its process died (killed, out of memory): a new one is needed."""
        return bool(getattr(self.pool, "_broken", False))

    def close(self) -> None:
        """Stop it now: a call still running in it (a hung challenger) is not waited for, and
        its process is ended rather than left spinning."""
        self.closed = True
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with suppress(Exception):
                process.terminate()


__all__ = ["PAIRED_EVERY", "PAIRED_ROWS", "Call", "Scored", "ShadowProcess", "score"]
