"""Prometheus alert rules and Alertmanager's config, checked by the tools that load them:
`promtool check rules`, `promtool test rules` (each alert fires on synthetic series, with its
labels and annotations, and stays quiet otherwise, the scheduler and a stale monitor included),
`promtool check config` and `amtool check-config` (Debian: apt-get install prometheus
prometheus-alertmanager)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[2] / "infra" / "prometheus"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: apt-get install prometheus prometheus-alertmanager")
    return path


def run(*argv: str) -> str:
    proc = subprocess.run(argv, cwd=PROM, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_rules_are_valid():
    assert "SUCCESS: 9 rules found" in run(tool("promtool"), "check", "rules", "alerts.yml")


def test_rules_fire_as_intended():
    assert "SUCCESS" in run(tool("promtool"), "test", "rules", "promtool_tests.yml")


def test_prometheus_loads_the_rules(tmp_path):
    # The scrape job reads serving's token from a file written when the container starts
    # (docker-compose.yml): the check runs on a copy whose token file exists.
    for f in PROM.glob("*.yml"):
        shutil.copy(f, tmp_path / f.name)
    config = tmp_path / "prometheus.yml"
    token = tmp_path / ".serving-token"
    token.write_text("test-token")
    config.write_text(config.read_text().replace("/prometheus/.serving-token", str(token)))
    proc = subprocess.run(
        [tool("promtool"), "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "alerts.yml" in out and "SUCCESS: 9 rules found" in out


def test_alertmanager_config_is_valid():
    assert "SUCCESS" in run(tool("amtool"), "check-config", "alertmanager.yml")


def test_every_rule_has_severity_summary_and_runbook():
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {g["name"] for g in groups} == {"retrainer-serving", "retrainer-drift"}
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["annotations"]["runbook_url"].startswith("README.md#"), rule["alert"]
