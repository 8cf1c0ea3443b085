"""Faults serving survives with its log whole (slow tier): SIGKILL under load, an S3 outage."""

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

# Imported at collection: at run time `conftest` may name another folder's conftest.
from conftest import start_server, stop_server
from retrainer.config.secrets import serving_admin_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MODEL = "credit_srv"
CLIENTS = 50


def sample_rows(n=40):
    data = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv").dropna().head(n)
    data = data.drop(columns=["Status"])
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in data.to_dict("records")
    ]


async def _hammer(url: str, rows: list[dict], stop: threading.Event, answered: list) -> int:
    """CLIENTS concurrent clients until `stop` or the server goes away; every 200 recorded."""
    errors = 0

    async def client(k: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=10) as http:
            i = k
            while not stop.is_set():
                body = {"rows": rows[i % len(rows) : i % len(rows) + 1 + k % 3]}
                i += 1
                try:
                    r = await http.post(f"{url}/models/{MODEL}/predict", json=body)
                except httpx.HTTPError:
                    errors += 1
                    await asyncio.sleep(0.05)
                    continue
                if r.status_code == 200:
                    answered.append((r.json()["request_id"], len(r.json()["predictions"])))

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    return errors


def logged_rows(root: Path) -> set[tuple[str, int]]:
    from retrainer.stores import storage

    df = storage.read_table(str(root / MODEL))
    return set(zip(df["_request_id"], df["_row"].astype(int), strict=True))


def test_sigkill_under_50_clients_loses_no_answered_request(served_model, tmp_path):
    from retrainer.config.settings import get_settings
    from testenv import free_port

    log_root = tmp_path / "inference_log"
    env = {
        "RETRAINER_INFERENCE_LOG_URI": str(log_root),
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path / "spool"),
    }
    port = free_port()
    proc, url = start_server(get_settings(), MODEL, port, env)
    rows, answered, stop = sample_rows(), [], threading.Event()
    load = threading.Thread(target=lambda: asyncio.run(_hammer(url, rows, stop, answered)))
    load.start()
    deadline = time.monotonic() + 90  # a busy machine answers slowly: wait for real traffic
    while len(answered) < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # mid-load: batches in flight, rows only in the spool
    proc.wait()
    time.sleep(0.5)
    stop.set()
    load.join()
    assert answered, "no request was answered before the kill"

    proc, url = start_server(get_settings(), MODEL, port, env)  # recovers the spool
    try:
        admin = {"Authorization": f"Bearer {serving_admin_token(get_settings())}"}
        httpx.post(f"{url}/flush", headers=admin, timeout=60).raise_for_status()
    finally:
        stop_server(proc)
    expected = {(rid, row) for rid, n in answered for row in range(n)}
    logged = logged_rows(log_root)
    missing = expected - logged
    print(
        f"\nSIGKILL under {CLIENTS} clients: {len(answered)} requests answered "
        f"({len(expected)} rows), {len(logged)} rows logged, {len(missing)} answered rows missing"
    )
    assert not missing


class CuttableProxy:
    """A loopback TCP proxy in front of the S3 endpoint that can be cut off and restored."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()  # the endpoint is "down": connections die at once
                continue
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.up.clear()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self.conns.clear()

    def restore(self) -> None:
        self.up.set()


def test_a_60s_s3_outage_loses_no_answered_request(served_model, s3_endpoint, s3_bucket, tmp_path):
    from retrainer.config.settings import get_settings
    from retrainer.stores import storage
    from testenv import free_port

    proxy = CuttableProxy(s3_endpoint)
    root = f"s3://{s3_bucket}/inference_log"
    env = {
        "RETRAINER_INFERENCE_LOG_URI": root,
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path / "spool"),
        "RETRAINER_SERVING_COMPACT_SECONDS": "1",
        "AWS_ENDPOINT_URL": proxy.url,
        "RETRAINER_S3_ENDPOINT_URL": proxy.url,
    }
    proc, url = start_server(get_settings(), MODEL, free_port(), env)
    rows, answered = sample_rows(), []
    try:
        with httpx.Client(timeout=10) as http:

            def send(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    r = http.post(f"{url}/models/{MODEL}/predict", json={"rows": rows[:2]})
                    assert r.status_code == 200, r.text
                    answered.append(r.json()["request_id"])
                    time.sleep(0.02)

            send(3)
            proxy.cut()
            send(60)  # S3 unreachable for 60 s: requests keep being answered and spooled
            ready = http.get(f"{url}/ready").json()["logs"]["requests"]
            assert ready["last_error"] and ready["spool_bytes"] > 0
            proxy.restore()
            deadline = time.monotonic() + 90
            admin = {"Authorization": f"Bearer {serving_admin_token(get_settings())}"}
            while time.monotonic() < deadline:
                flushed = http.post(f"{url}/flush", headers=admin, timeout=120).json()
                if flushed["pending_segments"] == 0:
                    break
                time.sleep(2)
    finally:
        log = stop_server(proc)
    os.environ["AWS_ENDPOINT_URL"] = s3_endpoint
    df = storage.read_table(f"{root}/{MODEL}")
    logged = set(df["_request_id"])
    missing = set(answered) - logged
    print(
        f"\n60 s S3 outage: {len(answered)} requests answered, {len(df)} rows logged, "
        f"{len(missing)} answered requests missing"
    )
    assert not missing and len(df) == 2 * len(answered)
    assert "could not write" in log and "reachable again" in log
