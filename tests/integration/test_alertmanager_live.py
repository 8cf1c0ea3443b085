"""The scheduler-down alert, live: the real Airflow scheduler sends its StatsD heartbeat, the real
Prometheus (Debian's `prometheus`) evaluates infra/prometheus/alerts.yml and the real Alertmanager
(Debian's `prometheus-alertmanager`) routes it, by infra/prometheus/alertmanager.yml's routes, to a
webhook receiver on loopback. The test stops the scheduler and waits for the alert.

Bounded: the configs are derived from the real files with short intervals (scrape and evaluation
every second, the scheduler rule's 5-minute window and `for` shortened to seconds). Between
Airflow's StatsD and Prometheus stands a tiny StatsD-to-/metrics bridge in place of
statsd-exporter (not packaged by Debian; tests/containers runs the real one), exposing the
unmapped counter under the name statsd-exporter gives it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

import testenv
from debian_tools import debian_command, debian_tool
from retrainer.config.environment import process_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PROM = Path(__file__).resolve().parents[2] / "infra" / "prometheus"
RULE = "RetrainerSchedulerDown"
HOOK_TOKEN = "canary-alertmanager-token-93be1"


class StatsdBridge:
    """Counts StatsD counters received over UDP and serves them at /metrics, dots made
    underscores, as statsd-exporter does for names its mapping does not match."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.5)
        self.stopped = threading.Event()
        bridge = self

        class Metrics(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                lines = [
                    f"# TYPE {name} counter\n{name} {value}\n"
                    for name, value in sorted(bridge.counts.items())
                ]
                body = "".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)

    @property
    def udp_port(self) -> int:
        return int(self.udp.getsockname()[1])

    @property
    def http_port(self) -> int:
        return int(self.http.server_address[1])

    def _receive(self) -> None:
        while not self.stopped.is_set():
            try:
                packet = self.udp.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            for line in packet.splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                if kind.split("|")[0] == "c":
                    key = "".join(c if c.isalnum() else "_" for c in name)
                    self.counts[key] = self.counts.get(key, 0.0) + float(value or 0)

    def __enter__(self) -> StatsdBridge:
        threading.Thread(target=self._receive, daemon=True).start()
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.http.shutdown()
        self.udp.close()


def fast_rules(path: Path) -> None:
    """alerts.yml with the scheduler rule's windows in seconds (the other rules as they are)."""
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())
    found = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == RULE]
    assert len(found) == 1, f"{RULE} is not in alerts.yml"
    rule = found[0]
    assert "[5m]" in rule["expr"] and rule["for"] == "5m"
    rule["expr"] = rule["expr"].replace("[5m]", "[10s]")
    rule["for"] = "3s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))


def loopback_alertmanager_config(path: Path, hook_port: int, token_file: Path) -> None:
    """alertmanager.yml's routes and inhibitions, each receiver's destinations replaced by the
    loopback webhook (with its bearer token from a file, as the real config reads it)."""
    config = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    config.pop("global", None)  # SMTP settings: no e-mail in this test
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for receiver in config["receivers"]:
        name = receiver["name"]
        receiver.clear()
        receiver.update(
            name=name,
            webhook_configs=[
                {
                    "url": f"http://127.0.0.1:{hook_port}/alerts/{name}",
                    "send_resolved": False,
                    "http_config": {
                        "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
                    },
                }
            ],
        )
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what: str, check, timeout: float, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
    raise AssertionError(f"{what} not within {timeout} s\n{tails}")


def prometheus_query(url: str, query: str) -> list:
    try:  # not listening yet while it starts (slow on a loaded machine): nothing to read yet
        resp = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5)
    except httpx.HTTPError:
        return []
    return list(resp.json()["data"]["result"]) if resp.status_code == 200 else []


def rule_alerts(url: str) -> list[dict]:
    try:
        alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    except httpx.HTTPError:
        return []
    return [a for a in alerts if a["labels"]["alertname"] == RULE]


def test_scheduler_down_reaches_the_webhook_through_alertmanager(airflow_db, webhook, tmp_path):
    prometheus = debian_tool("prometheus")
    alertmanager = debian_command("prometheus-alertmanager")
    received, hook_port = webhook
    received.clear()
    token_file = tmp_path / "alert_webhook_token"
    token_file.write_text(HOOK_TOKEN)
    fast_rules(tmp_path / "alerts.yml")
    loopback_alertmanager_config(tmp_path / "alertmanager.yml", hook_port, token_file)
    am_port, prom_port = testenv.free_port(), testenv.free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    logs = [tmp_path / n for n in ("scheduler.log", "prometheus.log", "alertmanager.log")]
    procs: list[subprocess.Popen] = []
    with StatsdBridge() as bridge:
        prom_config = yaml.safe_load((PROM / "prometheus.yml").read_text())
        prom_config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        prom_config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        }
        airflow_job = next(j for j in prom_config["scrape_configs"] if j["job_name"] == "airflow")
        airflow_job["static_configs"][0]["targets"] = [f"127.0.0.1:{bridge.http_port}"]
        prom_config["scrape_configs"] = [airflow_job]  # serving is not part of this test
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_config, sort_keys=False))

        env = dict(
            os.environ,
            **process_environment(testenv.SETTINGS),
            AIRFLOW__METRICS__STATSD_ON="True",
            AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
            AIRFLOW__METRICS__STATSD_PORT=str(bridge.udp_port),
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        )
        airflow = str(Path(sys.executable).parent / "airflow")
        try:
            scheduler = start([airflow, "scheduler"], logs[0], env)
            procs.append(scheduler)
            wait_for(
                "the scheduler's first StatsD heartbeat",
                lambda: bridge.counts.get("airflow_scheduler_heartbeat"),
                120,
                logs[:1],
            )
            procs.append(
                start(
                    [
                        *alertmanager,
                        f"--config.file={tmp_path / 'alertmanager.yml'}",
                        f"--storage.path={tmp_path / 'am-data'}",
                        f"--web.listen-address=127.0.0.1:{am_port}",
                        "--cluster.listen-address=",
                    ],
                    logs[2],
                )
            )
            procs.append(
                start(
                    [
                        prometheus,
                        f"--config.file={tmp_path / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                        f"--web.listen-address=127.0.0.1:{prom_port}",
                    ],
                    logs[1],
                )
            )
            # While the scheduler runs: its heartbeat grows in Prometheus and the rule is quiet.
            wait_for(
                "a growing heartbeat in Prometheus",
                lambda: prometheus_query(prom_url, "rate(airflow_scheduler_heartbeat[10s]) > 0"),
                60,
                logs,
            )
            assert [a["state"] for a in rule_alerts(prom_url)] in ([], ["pending"])
            time.sleep(4)  # longer than the rule's `for`: nothing fires while it heartbeats
            assert rule_alerts(prom_url) == [] and received == []

            stop(scheduler)
            beats = bridge.counts["airflow_scheduler_heartbeat"]
            sent = wait_for("the alert at the webhook", lambda: list(received), 90, logs)
        finally:
            for proc in reversed(procs):
                stop(proc)
    assert bridge.counts["airflow_scheduler_heartbeat"] == beats  # no heartbeat once stopped
    alert = sent[0]
    assert alert["auth"] == f"Bearer {HOOK_TOKEN}"  # the receiver's token, read from its file
    body = alert["body"]
    assert body["status"] == "firing" and body["receiver"] == "ml-oncall-urgent"  # critical route
    (fired,) = [a for a in body["alerts"] if a["labels"]["alertname"] == RULE]
    assert fired["labels"]["severity"] == "critical"
    assert "has not heartbeaten" in fired["annotations"]["summary"]
    assert fired["annotations"]["runbook_url"].startswith("README.md#")
    assert "retrainer status" in fired["annotations"]["description"]
