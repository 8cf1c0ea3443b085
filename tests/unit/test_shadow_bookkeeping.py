"""The challenger's shadow process bookkeeping on serving's event loop: the running process is
taken without a thread, a dead or shut one is never handed out, and forgetting one never waits
for a thread that is starting another."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from retrainer.serving import rollout
from retrainer.serving.rollout import Challenger


class Process:
    """Stands in for ShadowProcess (which spawns a process holding two pickled models): the
    attributes the bookkeeping reads."""

    def __init__(self, handle, champion):
        self.champion, self.broken, self.closed = champion, False, False

    def close(self):
        self.closed = True


@pytest.fixture
def challenger(monkeypatch):
    monkeypatch.setattr(rollout, "ShadowProcess", Process)
    batcher = SimpleNamespace(close=lambda: None)
    handle = SimpleNamespace(name="m", version="2")
    c = Challenger(handle=handle, batcher=batcher, executor=ThreadPoolExecutor(1))  # type: ignore[arg-type]
    yield c
    c.executor.shutdown()


def test_the_running_process_is_taken_and_a_dead_or_shut_one_never(challenger):
    champion, other = object(), object()
    assert challenger.running_shadow(champion) is None  # none yet: start one in a thread
    first = challenger.shadow_process(champion)
    assert challenger.running_shadow(champion) is first
    assert challenger.running_shadow(other) is None  # the champion changed
    first.broken = True
    assert challenger.running_shadow(champion) is None
    second = challenger.shadow_process(champion)
    assert second is not first and first.closed
    second.close()  # shut by another thread (a re-PUT after a reload)
    assert challenger.running_shadow(champion) is None
    assert challenger.shadow_process(champion) is not second


def test_forgetting_a_process_never_waits_for_one_starting(challenger):
    champion = object()
    dead = challenger.shadow_process(champion)
    starting = threading.Event()
    release = threading.Event()

    def start_another():  # a thread holding the lock, as while a process spawns (seconds)
        with challenger._shadow_lock:
            starting.set()
            release.wait(10)

    t = threading.Thread(target=start_another)
    t.start()
    starting.wait(10)
    began = time.monotonic()
    challenger.forget_shadow(dead)
    waited = time.monotonic() - began
    release.set()
    t.join(10)
    assert waited < 5 and dead.closed  # closed at once, without the lock
    assert challenger.running_shadow(champion) is None
    replaced = challenger.shadow_process(champion)  # the next start replaces the closed one
    assert replaced is not dead
    challenger.forget_shadow(replaced)  # with the lock free: dropped too
    assert challenger.shadow is None


def test_a_closed_challenger_hands_out_nothing(challenger):
    champion = object()
    challenger.shadow_process(champion)
    challenger.close()
    assert challenger.running_shadow(champion) is None
    with pytest.raises(RuntimeError, match="taken out of traffic"):
        challenger.shadow_process(champion)
