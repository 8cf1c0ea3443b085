"""A challenger beside the champion of one model: shadow (mirrored, never answering) or canary.

Shadow: after the champion has answered, a `fraction` of requests is queued for the challenger
(a bounded queue, RETRAINER_SERVING_SHADOW_QUEUE_ROWS: when it is full the rows are dropped and counted, never waited for), scored in
a process of the challenger's own (`serving.shadow`: off the serving process's GIL), compared
with the champion's answers and written to the `shadow` log; on a share of the batches that
process also times both versions on the same rows, for a like-for-like latency check. Canary: a `fraction` of requests, chosen by a hash of the key (an entity column or
the request id), is answered by the challenger through a batcher of its own; any fault of the
challenger sends the request back to the champion (a fallback). Every PUT starts a new step whose
statistics start from zero; the rollout lives in the serving process only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from retrainer.serving.batcher import Batcher
from retrainer.serving.durable_log import now_iso
from retrainer.serving.model import LoadedModel
from retrainer.serving.shadow import PAIRED_EVERY, ShadowProcess

log = logging.getLogger("retrainer.serving")
MODES = ("shadow", "canary")
CHAMPION, CHALLENGER = "champion", "challenger"
SHADOW_BATCH_ROWS = 512
SHADOW_GATHER_SECONDS = 0.25  # mirrors gather this long into one batch (the shadow can wait)
SHADOW_SLICE = 16  # scored mirrors compared, logged and counted per turn of the event loop
TIMING_SAMPLES = 100_000  # predict times kept per role and step for the p99
MAX_DISAGREE_KEYS = 200  # champion->challenger label pairs reported (classes are bounded anyway)


def route_value(key: str | None, rows: list[dict[str, Any]], request_id: str) -> str:
    """What the split hashes: the key column of the request's first row, else the request id."""
    if key is not None and rows and isinstance(rows[0], dict):
        value = rows[0].get(key)
        if value is not None:
            return str(value)
    return request_id


def routed(value: str, fraction: float) -> bool:
    """True for the challenger's share: stable per value, and a larger fraction only adds values."""
    return int(hashlib.sha256(value.encode()).hexdigest()[:8], 16) / 2**32 < fraction


@dataclass
class RoleStats:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    fallbacks: int = 0
    times_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_SAMPLES))

    def p99_ms(self) -> float | None:
        return p99(self.times_ms)

    def as_dict(self, fallbacks: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests, "rows": self.rows, "errors": self.errors}
        if fallbacks:
            out["fallbacks"] = self.fallbacks
        out["predict_p99_ms"] = self.p99_ms()
        return out


def p99(times: deque[float]) -> float | None:
    if not times:
        return None
    ordered = sorted(times)
    return round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)], 3)


@dataclass
class PairedTimes:
    """Both versions timed on the same rows, back to back, in turns, in the shadow's process:
    mirrored rows in shadow, rows the challenger answered in canary."""

    challenger_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_SAMPLES))
    champion_ms: deque[float] = field(default_factory=lambda: deque(maxlen=TIMING_SAMPLES))
    calls: int = 0

    def add(self, challenger_s: float, champion_s: float) -> None:
        self.calls += 1
        self.challenger_ms.append(challenger_s * 1000)
        self.champion_ms.append(champion_s * 1000)

    batches: int = 0

    def due(self) -> bool:
        """Time this batch? One in PAIRED_EVERY, from the first."""
        self.batches += 1
        return (self.batches - 1) % PAIRED_EVERY == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "challenger_p99_ms": p99(self.challenger_ms),
            "champion_p99_ms": p99(self.champion_ms),
        }


@dataclass
class MirrorStats:
    rows: int = 0
    dropped: int = 0
    agree: int = 0
    disagree_by_class: Counter[str] = field(default_factory=Counter)
    rel_diff_sum: float = 0.0
    rel_diff_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        mean = self.rel_diff_sum / self.rel_diff_rows if self.rel_diff_rows else None
        return {
            "rows": self.rows,
            "dropped": self.dropped,
            "agree": self.agree,
            "disagree_by_class": dict(self.disagree_by_class.most_common(MAX_DISAGREE_KEYS)),
            "mean_abs_rel_diff": mean,
        }


def compare(
    champion: list[Any], challenger: list[Any], classification: bool, stats: MirrorStats
) -> None:
    """Add one batch of paired answers to the step's agreement (labels) or difference (values)."""
    stats.rows += len(champion)
    for a, b in zip(champion, challenger, strict=True):
        if classification:
            if a == b:
                stats.agree += 1
            else:
                stats.disagree_by_class[f"{a}->{b}"] += 1
        else:
            stats.rel_diff_sum += abs(float(b) - float(a)) / max(abs(float(a)), 1e-9)
            stats.rel_diff_rows += 1


@dataclass
class Step:
    """One step of a rollout (one PUT): its settings and statistics, from zero."""

    mode: str
    fraction: float
    key: str | None
    started: str = field(default_factory=now_iso)
    champion: RoleStats = field(default_factory=RoleStats)
    challenger: RoleStats = field(default_factory=RoleStats)
    mirrored: MirrorStats = field(default_factory=MirrorStats)
    paired: PairedTimes = field(default_factory=PairedTimes)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def role(self, name: str) -> RoleStats:
        return self.champion if name == CHAMPION else self.challenger

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "champion": self.champion.as_dict(fallbacks=False),
                "challenger": self.challenger.as_dict(fallbacks=True),
                "mirrored": self.mirrored.as_dict(),
                "paired_latency": self.paired.as_dict(),
            }

    def routes(self, rows: list[dict[str, Any]], request_id: str) -> bool:
        return routed(route_value(self.key, rows, request_id), self.fraction)


@dataclass
class Mirror:
    """One request queued for the shadow: the champion's answer beside its rows."""

    request_id: str
    champion: LoadedModel
    rows: list[dict[str, Any]]
    labels: list[Any]
    probs: list[dict[str, float]] | None
    step: Step


class Challenger:
    """A loaded challenger at work: the batcher answering its canary share (predicting in the
    challenger's own thread, so a slow challenger never holds up the event loop), and the shadow
    queue (scored in a process of its own, started at the first mirrored request)."""

    def __init__(self, handle: LoadedModel, batcher: Batcher, executor: ThreadPoolExecutor) -> None:
        self.handle = handle
        self.batcher = batcher  # predicts in `executor`
        self.queue: asyncio.Queue[Mirror] = asyncio.Queue()
        self.queued_rows = 0
        self.executor = executor
        self.worker: asyncio.Task[None] | None = None
        self.shadow: ShadowProcess | None = None
        self._shadow_lock = threading.Lock()  # started off the event loop, by one thread at once
        self._closed = False

    def running_shadow(self, champion: LoadedModel) -> ShadowProcess | None:
        """The shadow's process if it is up for this champion (None: `shadow_process` must start
        one, off the event loop). Reads only: fit for the event loop, for every mirrored batch."""
        shadow = self.shadow
        if self._closed or shadow is None or shadow.champion is not champion:
            return None
        return None if shadow.closed or shadow.broken else shadow

    def forget_shadow(self, shadow: ShadowProcess) -> None:
        """`shadow` died or was shut: closed, so that the next `shadow_process` replaces it.
        On the event loop: never waits for the lock a thread starting a process holds."""
        shadow.close()
        if self._shadow_lock.acquire(blocking=False):
            try:
                if self.shadow is shadow:
                    self.shadow = None
            finally:
                self._shadow_lock.release()

    def shadow_process(self, champion: LoadedModel) -> ShadowProcess:
        """The shadow's process, holding this champion (a new one if the champion changed, or
        if the last one died). Starting one pickles both models and spawns a process: call it
        off the event loop (`asyncio.to_thread`), or every request waits meanwhile."""
        with self._shadow_lock:
            if self._closed:
                raise RuntimeError(f"{self.handle.name}: the challenger was taken out of traffic")
            if self.shadow is not None and (
                self.shadow.champion is not champion or self.shadow.broken or self.shadow.closed
            ):
                self.shadow.close()
                self.shadow = None
            if self.shadow is None:
                self.shadow = ShadowProcess(self.handle, champion)
                if self._closed:  # closed while it started: never leave its process behind
                    self.shadow.close()
                    self.shadow = None
                    raise RuntimeError(
                        f"{self.handle.name}: the challenger was taken out of traffic"
                    )
            return self.shadow

    def close(self) -> None:
        """Out of traffic at once: no new request reaches it; queued mirrors are dropped."""
        self._closed = True  # (a shadow process starting in a thread now closes itself)
        self.batcher.close()
        if self.worker is not None:
            self.worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.shadow is not None:
            self.shadow.close()


@dataclass
class Rollout:
    """What the model's rollout is now: the challenger and the current step."""

    challenger: Challenger
    step: Step

    def status(self, model: str, champion: str | None) -> dict[str, Any]:
        s = self.step
        return {
            "model": model,
            "mode": s.mode,
            "champion": champion,
            "challenger": self.challenger.handle.version,
            "fraction": s.fraction,
            "key": s.key,
            "step_started": s.started,
            "stats": s.stats(),
        }


def no_rollout(model: str, champion: str | None) -> dict[str, Any]:
    empty = Step("none", 0.0, None)
    return {
        "model": model,
        "mode": "none",
        "champion": champion,
        "challenger": None,
        "fraction": 0.0,
        "key": None,
        "step_started": None,
        "stats": empty.stats(),
    }


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "MODES",
    "Challenger",
    "Mirror",
    "MirrorStats",
    "PairedTimes",
    "SHADOW_BATCH_ROWS",
    "SHADOW_GATHER_SECONDS",
    "SHADOW_SLICE",
    "RoleStats",
    "Rollout",
    "Step",
    "compare",
    "no_rollout",
    "route_value",
    "routed",
]
