"""Child processes of the serving process (the logs' compaction, the shadow's scoring): spawned,
niced, and gone within a second of the serving process, however it dies (a SIGKILL leaves no one
to shut a pool down, and its worker can wait on its queue forever: seen in a benchmark)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

NICE = 10  # below the serving process: when CPU is short, the answers clients wait for come first


def die_with(parent: int) -> None:
    """Exit when `parent` is gone (this process is then re-parented): checked every second by a
    daemon thread. Not the kernel's PR_SET_PDEATHSIG: that follows the thread that started the
    child, and a pool may be started from a short-lived request thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _init(parent: int, nice: int, initializer: Callable[..., None], args: tuple[Any, ...]) -> None:
    die_with(parent)
    if nice:
        os.nice(nice)
    initializer(*args)


def child_pool(
    initializer: Callable[..., None], *args: Any, nice: int = NICE
) -> ProcessPoolExecutor:
    """One spawned worker (not forked: the serving process has threads and an event loop a fork
    would copy mid-flight), niced, that dies with this process, `initializer(*args)` run first."""
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(os.getpid(), nice, initializer, args),
    )


__all__ = ["NICE", "child_pool", "die_with"]
