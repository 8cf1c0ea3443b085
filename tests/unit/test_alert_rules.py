"""Alert routing and the one-alert-per-change-of-state rule, without services."""

import pytest
import yaml

from retrainer.errors import SpecError
from retrainer.spec import ALERT_EVENTS, load_spec, parse_spec
from retrainer.steps.alerts import monitor_alert, monitor_state

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def spec_with(alerts):
    raw = yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())
    raw["alerts"] = alerts
    return parse_spec(raw, "credit_default.yaml")


def test_alerts_route_events_to_connection_ids():
    spec = spec_with([{"conn_id": "mail"}, {"conn_id": "hook", "events": ["gate_rejected"]}])
    assert spec.alert_destinations("gate_rejected") == ["mail", "hook"]
    assert spec.alert_destinations("monitor_warn") == ["mail"]
    assert set(ALERT_EVENTS) >= {"task_failed", "rollout_stopped", "monitor_schema_changed"}
    assert load_spec(ROOT / "models" / "credit_default.yaml").alerts == []


@pytest.mark.parametrize("conn_id", ["https://hooks.slack.com/T000/B000/XXXX", "user:pw@host"])
def test_a_spec_never_holds_a_destination_url_or_token(conn_id):
    with pytest.raises(SpecError, match="never a URL or a token"):
        spec_with([{"conn_id": conn_id}])
    with pytest.raises(SpecError, match="alerts.0.events.0"):
        spec_with([{"conn_id": "ok", "events": ["monitor_panic"]}])


def measured(decision, previous):
    return {
        "decision": {
            "decision": decision,
            "reasons": ["PSI Age 0.4 >= psi_retrain 0.25"],
            "features": ["Age"],
            "psi": {"Age": 0.4, "Amount": 0.02},
            "max_psi": 0.4,
            "rows": 500,
            "psi_warn": 0.1,
            "psi_retrain": 0.25,
            "noise_floor": 0.03,
            "window": {"start": None, "end": "2026-01-02T00:00:00+00:00"},
            "champion_version": "3",
        },
        "previous_state": previous,
        "mlflow_run_id": "r1",
        "experiment_id": "4",
    }


def test_one_alert_per_change_of_state():
    spec = spec_with([{"conn_id": "mail"}])
    state, events = None, []
    for decision in [
        "ok",
        "warn",
        "warn",
        "insufficient_data",
        "warn",
        "retrain",
        "retrain",
        "ok",
        "retrain",
    ]:
        alert = monitor_alert(spec, measured(decision, state), "none", "", "run")
        events.append(alert.event if alert else None)
        state = monitor_state(decision, state)
    assert events == [
        None,
        "monitor_warn",
        None,
        None,
        None,
        "monitor_retrain",
        None,
        None,
        "monitor_retrain",
    ]


def test_a_monitor_alert_says_what_happened_and_what_to_do():
    spec = spec_with([{"conn_id": "mail"}])
    alert = monitor_alert(
        spec, measured("retrain", "ok"), "cooldown", "cooldown until tomorrow", "scheduled__1"
    )
    text = alert.text()
    assert alert.title == "[credit_default] monitor: retrain (was ok)" and alert.version == "3"
    assert "PSI Age 0.400 (warn at 0.1, retrain at 0.25)" in text
    assert "responsible: Age" in text and "retrain held by the cooldown" in text
    assert "to act: retrainer trigger credit_default" in text
    assert (
        "/dags/credit_default_monitor/runs/scheduled__1" in text
        and "#/experiments/4/runs/r1" in text
    )
    assert "runbook: README.md#drift-alarm" in text


def test_a_slack_alert_quoting_data_is_sent_as_plain_text(monkeypatch):
    """A category value "<!channel> <https://x|Re-run here>" quoted by a validation failure:
    through Apprise's real Slack formatter it must reach Slack escaped, with mrkdwn off (only
    the HTTP call is caught here; Slack itself cannot be reached from a test)."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    import requests

    from retrainer.orchestration.notify import send_apprise
    from retrainer.steps.alerts import task_failed_alert

    spec = load_spec(Path(__file__).resolve().parents[2] / "models" / "credit_default.yaml")
    hostile = "<!channel> <https://attacker.example/rerun|Re-run the pipeline here>"
    made = task_failed_alert(
        spec,
        spec.retrain_dag_id,
        "scheduled__x",
        "validate_data",
        1,
        f"AirflowFailException: Home: unexpected values: ['{hostile}']",
    )
    sent: list[dict] = []

    def post(url, data=None, **kwargs):
        sent.append(json.loads(data))
        return SimpleNamespace(status_code=200, content=b"ok", text="ok", headers={})

    monkeypatch.setattr(requests, "post", post)
    monkeypatch.setattr(requests, "request", lambda method, url, **kw: post(url, **kw))
    conn = SimpleNamespace(
        conn_id="alert_slack",
        conn_type="apprise",
        extra_dejson={
            "config": {"path": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7F/#ops"}
        },
    )
    send_apprise(conn, made)
    assert sent, "Apprise sent nothing"
    payload = json.dumps(sent[0])
    assert "<!channel>" not in payload and "<https://attacker.example" not in payload
    assert "&lt;!channel&gt;" in payload
    assert sent[0].get("mrkdwn") is False
