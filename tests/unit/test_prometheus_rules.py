"""Prometheus alert rules and Alertmanager's config, checked by the tools that load them:
`promtool check rules`, `promtool test rules` (each alert fires on synthetic series, with its
labels and annotations, and stays quiet otherwise, the scheduler and a stale monitor included),
`promtool check config` and `amtool check-config` (Debian's `prometheus` and
`prometheus-alertmanager`: from PATH, or fetched into .retrainer/tools/, see debian_tools)."""

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from debian_tools import debian_tool as tool

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "infra" / "prometheus"


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


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_link_lands_on_a_readme_section():
    from retrainer.steps.alerts import RUNBOOK

    readme = (ROOT / "README.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", readme, re.M)}
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        anchor = rule["annotations"]["runbook_url"].removeprefix("README.md#")
        assert anchor in anchors, (rule["alert"], anchor)
    for event, anchor in RUNBOOK.items():
        assert anchor in anchors, (event, anchor)
    # The scheduler and a stale monitor have their own section; a rollout its own.
    stale = {r["alert"]: r for g in groups for r in g["rules"]}
    for name in ("RetrainerMonitorStale", "RetrainerSchedulerDown"):
        assert stale[name]["annotations"]["runbook_url"].endswith("#the-monitor-stopped-reporting")
    assert RUNBOOK["rollout_stopped"] == "a-rollout-stopped"
