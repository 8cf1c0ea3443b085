"""Keep one service process running: start it again when it exits on its own.

Airflow's scheduler, dag-processor and triggerer exit when their metadata database goes away (a
PostgreSQL restart), and expect a supervisor (systemd, Kubernetes) to start them again.
`retrainer up` runs natively with none, so `services.start` runs every service under this one:

    python -m retrainer.platform.supervise NAME -- COMMAND [ARGS...]

The child shares the supervisor's process group, log file, environment and working directory, so
`retrainer down` (SIGTERM to the group) stops both. A child that fails within its first
`FIRST_RUN_GRACE` seconds is a start-up failure: reported, not retried. After that, an exit is
restarted with a growing delay, up to `MAX_RESTARTS` times in `WINDOW` seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import deque
from types import FrameType

FIRST_RUN_GRACE = 20.0
MAX_RESTARTS = 10
WINDOW = 300.0
RESTART_DELAY = 2.0  # times the restarts in the window, at most 30 s


def supervise(name: str, argv: list[str]) -> int:
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    restarts: deque[float] = deque()
    first = True
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping:
            return code
        lived = time.monotonic() - started
        if first and lived < FIRST_RUN_GRACE and code != 0:
            say(f"{name} exited with {code} during start-up ({lived:.0f} s): not restarting")
            return code
        first = False
        now = time.monotonic()
        restarts.append(now)
        while restarts and now - restarts[0] > WINDOW:
            restarts.popleft()
        if len(restarts) > MAX_RESTARTS:
            say(f"{name} exited {len(restarts)} times in {WINDOW:.0f} s: giving up")
            return code
        delay = min(RESTART_DELAY * len(restarts), 30.0)
        say(f"{name} exited with {code} after {lived:.0f} s; restarting in {delay:.0f} s")
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.2)
        if stopping:
            return code


def say(message: str) -> None:
    print(f"[supervise] {message}", file=sys.stderr, flush=True)


def main() -> None:
    args = sys.argv[1:]
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: python -m retrainer.platform.supervise NAME -- COMMAND [ARGS...]")
    sys.exit(supervise(args[0], args[2:]))


if __name__ == "__main__":
    main()
