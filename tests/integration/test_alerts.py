"""Alerts through a real SMTP server (aiosmtpd) and a real webhook receiver, both on loopback:
each event's content, one alert per change of the monitor's state (through the real monitor
steps and MLflow), a task that fails for good (through Airflow's dag.test()), and no secret in
any log."""

from __future__ import annotations

import json
import logging
import time
from email import message_from_bytes
from email.policy import default

import pandas as pd
import pytest

import testenv
from conftest import register_version
from retrainer.config.settings import RunContext, get_settings

pytestmark = pytest.mark.integration
MODEL = "plug_alert"
SMTP_PASSWORD = "canary-smtp-secret-7f3a9"
HOOK_TOKEN = "canary-hook-token-51c2e"
APPRISE_PASSWORD = "canary-apprise-pass-9d04b"


class Mailbox:
    """aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    box = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"retrainer" and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok)

    port = testenv.free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
        auth_required=True,
    )
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def connections(monkeypatch, smtp_server, webhook):
    box, smtp_port = smtp_server
    received, hook_port = webhook
    box.messages.clear()
    received.clear()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALERT_MAIL",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": smtp_port,
                "login": "retrainer",
                "password": SMTP_PASSWORD,
                "extra": {"to": ["ml-oncall@example.org"], "disable_ssl": True},
            }
        ),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALERT_HOOK",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": hook_port,
                "password": HOOK_TOKEN,
                "extra": {"endpoint": "/alerts"},
            }
        ),
    )
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_APPRISE", apprise_conn(hook_port))
    return box, received


def apprise_conn(port: int) -> str:
    """An Apprise connection (Airflow's Apprise provider's shape) whose destination is Apprise's
    own JSON webhook (`json://`), here the loopback receiver, with basic-auth credentials."""
    url = f"json://retrainer:{APPRISE_PASSWORD}@127.0.0.1:{port}/apprise"
    return json.dumps({"conn_type": "apprise", "extra": {"config": {"path": url}}})


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def no_secret_anywhere(caplog, capfd):
    out, err = capfd.readouterr()
    logs = caplog.text + out + err
    for secret in (SMTP_PASSWORD, HOOK_TOKEN, APPRISE_PASSWORD):
        assert secret not in logs, secret


@pytest.fixture(scope="module")
def champion(airflow_db):
    return register_version(MODEL, f"alert-v1-{time.time_ns()}")


def log_traffic(df: pd.DataFrame, version: str) -> None:
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    rid = f"sim-{time.time_ns()}"
    rows = df.drop(columns=["diagnosis"]).to_dict(orient="records")
    log = BatchedParquetLog(get_settings().inference_log_root)
    log.append(
        MODEL,
        [
            {**r, "_request_id": rid, "_row": i, "_ts": now_iso(), "_model_version": version}
            for i, r in enumerate(rows)
        ],
    )
    log.close()


def check(n: int):
    """One monitor check through the real steps (window, PSI, decision, MLflow summary)."""
    from retrainer.steps.monitor import measure, window

    ctx = RunContext(dag_id=f"{MODEL}_monitor", run_id=f"alert-check-{n}-{time.time_ns()}")
    read = window.read_window(spec(), ctx)
    return ctx, measure.measure_drift(spec(), ctx, read)


def test_one_alert_per_change_of_the_monitors_state(connections, champion, caplog, capfd):
    from retrainer.orchestration.notify import alert
    from retrainer.steps.alerts import monitor_alert

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    data = pd.read_csv(testenv.ROOT / "examples" / "breast_cancer" / "breast_cancer.csv")
    shifted = data.copy()
    for col in ("mean_radius", "mean_texture", "mean_area"):
        shifted[col] = shifted[col] * 2.5
    sequence = [
        data.sample(400, random_state=1),
        shifted,
        shifted,
        data.sample(400, random_state=2),
        shifted,
    ]
    decisions, sent = [], []
    for n, frame in enumerate(sequence):
        log_traffic(frame, champion)
        time.sleep(0.01)
        ctx, measured = check(n)
        decision = measured["decision"]["decision"]
        decisions.append(decision)
        made = monitor_alert(spec(), measured, "triggered", "test", ctx.run_id)
        outcome = alert(spec(), made)
        if made is not None:
            assert outcome == {"alert_mail": "sent", "alert_hook": "sent"}, outcome
            sent.append(made)
    assert decisions == ["ok", "retrain", "retrain", "ok", "retrain"], decisions
    # Alerts at each change into a bad state, none for the persisting one.
    assert [a.event for a in sent] == ["monitor_retrain", "monitor_retrain"]
    assert wait_for(lambda: len(box.messages) == 2) and len(hooks) == 2
    mail = box.messages[0]
    body = mail.get_content()
    assert mail["Subject"].strip() == f"[{MODEL}] monitor: retrain (was ok)"
    assert f"model: {MODEL} (version {champion})" in body
    assert "PSI mean_area" in body and "retrain at 0.25" in body
    assert "responsible: " in body and "mean_area" in body.split("responsible: ")[1]
    assert "retrain queued" in body
    assert "airflow run: http://" in body and "mlflow run: http://" in body
    assert "runbook: README.md#drift-alarm" in body and f"retrainer trigger {MODEL}" in body
    hook = hooks[0]
    assert hook["auth"] == f"Bearer {HOOK_TOKEN}"
    assert hook["body"]["event"] == "monitor_retrain" and hook["body"]["version"] == champion
    no_secret_anywhere(caplog, capfd)


def test_gate_rejection_and_rollback_alerts(connections, caplog, capfd):
    from retrainer.core.gate import decide
    from retrainer.orchestration.notify import alert
    from retrainer.steps.alerts import gate_alert, rollback_alert

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    s = spec()
    decision = decide(s, {"roc_auc": 0.61, "f1": 0.5}, {"roc_auc": 0.97, "f1": 0.9}, "3")
    gated = {"gate": decision.to_dict(), "mlflow_run_id": "abc123", "experiment_id": "7"}
    assert alert(s, gate_alert(s, gated, "manual__1")) == {
        "alert_mail": "sent",
        "alert_hook": "sent",
    }
    done = {"from": "4", "to": "3", "ledger_run_id": "led1", "reload_error": ""}
    alert(s, rollback_alert(s, done, "smoke test: 3 of 50 predictions differ", "deploy__2"))
    assert wait_for(lambda: len(box.messages) == 2) and len(hooks) == 2
    gate_mail, rollback_mail = (m.get_content() for m in box.messages)
    assert "roc_auc 0.6100, champion 0.9700 (bound >= " in gate_mail and "FAIL" in gate_mail
    assert "champion v3 keeps serving" in gate_mail
    assert (
        "mlflow run: http://127.0.0.1" in gate_mail and "/#/experiments/7/runs/abc123" in gate_mail
    )
    assert "rolled back to v3" in box.messages[1]["Subject"]
    assert (
        "3 of 50 predictions differ" in rollback_mail
        and "champion moved back to v3" in rollback_mail
    )
    assert f"retrainer history {MODEL}" in rollback_mail
    no_secret_anywhere(caplog, capfd)


def test_a_destination_that_fails_logs_why_without_secrets(connections, monkeypatch, caplog, capfd):
    from retrainer.orchestration.notify import alert
    from retrainer.steps.alerts import rollback_alert

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    wrong = json.loads(__import__("os").environ["AIRFLOW_CONN_ALERT_MAIL"])
    wrong["login"] = "intruder"  # the server refuses this login
    wrong["extra"]["timeout"] = 3
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_MAIL", json.dumps(wrong))
    gone = json.loads(__import__("os").environ["AIRFLOW_CONN_ALERT_HOOK"])
    gone["port"] = testenv.free_port()  # nobody listens
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_HOOK", json.dumps(gone))
    s = spec()
    done = {"from": "2", "to": "1", "ledger_run_id": "x", "reload_error": ""}
    outcome = alert(s, rollback_alert(s, done, "boom", "deploy__3"))
    assert outcome["alert_mail"].startswith("SMTP")  # refused (or dropped) by the server
    assert "ConnectError" in outcome["alert_hook"]
    assert "NOT sent through connection alert_mail" in caplog.text
    assert box.messages == [] and hooks == []
    no_secret_anywhere(caplog, capfd)


def test_a_task_that_fails_for_good_alerts_once(connections, airflow_db, caplog, capfd):
    """The model's real retrain DAG through dag.test(): validate_data fails for good (its data
    path does not exist) and the failure callback the spec gives the DAG sends one alert."""
    from retrainer.orchestration.retrain import retrain_dag

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    missing = str(testenv.STATE / "no-such-batch.csv")
    dag = retrain_dag(spec(), testenv.MODELS / f"{MODEL}.yaml")
    dr = dag.test(run_conf={"data_path": missing})
    assert str(dr.state) == "failed"
    assert wait_for(lambda: len(box.messages) == 1) and len(hooks) == 1
    mail = box.messages[0]
    assert (
        mail["Subject"].strip()
        == f"[{MODEL}] {MODEL}_retrain.validate_data failed after 1 attempt(s)"
    )
    body = mail.get_content()
    assert "no such file or folder" in body and missing in body
    assert f"retrainer airflow tasks clear {MODEL}_retrain -t validate_data" in body
    assert hooks[0]["body"]["event"] == "task_failed"
    no_secret_anywhere(caplog, capfd)


def delivered(box, hooks, n_mail: int, paths: list[str]):
    """The mails and webhook bodies once all arrived (by path: /alerts, /apprise)."""
    assert wait_for(lambda: len(box.messages) == n_mail and len(hooks) == len(paths))
    assert sorted(h["path"] for h in hooks) == sorted(paths), hooks
    mails = [m.get_content().replace("\r\n", "\n") for m in box.messages]
    return mails, {h["path"]: h for h in hooks}


def test_schema_changed_and_warn_alerts(connections, champion, caplog, capfd):
    """The real monitor steps on traffic whose `mean_texture` arrives empty (schema_changed:
    mail and webhook), then on traffic with `mean_radius` shifted by 8 % (warn: mail, and the
    webhook through Apprise, as the spec routes them)."""
    from retrainer.orchestration.notify import alert
    from retrainer.steps.alerts import monitor_alert

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    data = pd.read_csv(testenv.ROOT / "examples" / "breast_cancer" / "breast_cancer.csv")
    broken = data.sample(450, random_state=4)
    broken["mean_texture"] = float("nan")
    log_traffic(broken, champion)
    ctx, measured = check(10)
    assert measured["decision"]["decision"] == "schema_changed", measured["decision"]
    made = monitor_alert(spec(), measured, "none", "", ctx.run_id)
    assert made is not None and made.event == "monitor_schema_changed"
    assert alert(spec(), made) == {"alert_mail": "sent", "alert_hook": "sent"}
    (body,), by_path = delivered(box, hooks, 1, ["/alerts"])
    assert f"[{MODEL}] monitor: schema_changed (was " in box.messages[0]["Subject"]
    assert f"model: {MODEL} (version {champion})" in body
    assert "mean_texture:" in body and "responsible: mean_texture" in body
    assert "what the automation did: nothing: retraining on broken inputs would not help" in body
    assert "airflow run: http://" in body and f"/dags/{MODEL}_monitor/runs/" in body
    assert "mlflow run: http://" in body and "runbook: README.md#drift-alarm" in body
    assert f"to act: retrainer monitor {MODEL} (after fixing the producer)" in body
    hook = by_path["/alerts"]["body"]
    assert hook["event"] == "monitor_schema_changed" and hook["version"] == champion
    assert hook["features"] == ["mean_texture"] and hook["text"] == body

    box.messages.clear()
    hooks.clear()
    shifted = data.sample(450, random_state=5)
    shifted["mean_radius"] = shifted["mean_radius"] * 1.08
    log_traffic(shifted, champion)
    time.sleep(0.01)
    ctx, measured = check(11)
    d = measured["decision"]
    assert d["decision"] == "warn", d
    made = monitor_alert(spec(), measured, "none", "", ctx.run_id)
    assert made is not None and made.event == "monitor_warn"
    # Routed to the mail and to Apprise, not to the plain webhook (its events omit warn).
    assert alert(spec(), made) == {"alert_mail": "sent", "alert_apprise": "sent"}
    (body,), by_path = delivered(box, hooks, 1, ["/apprise"])
    assert box.messages[0]["Subject"].strip() == f"[{MODEL}] monitor: warn (was schema_changed)"
    psi = d["psi"]["mean_radius"]
    assert f"PSI mean_radius {psi:.3f} (warn at {d['psi_warn']:g}, retrain at " in body
    assert d["psi_warn"] <= psi < d["psi_retrain"]
    assert "responsible: mean_radius" in body
    assert "what the automation did: nothing (an alert for people)" in body
    assert f"to act: retrainer drift -r TRAIN -c WINDOW --spec {MODEL}" in body
    assert "runbook: README.md#drift-alarm" in body and "models page: http://" in body
    # Through Apprise's JSON webhook: its basic auth, the title and the same text.
    sent = by_path["/apprise"]
    assert sent["auth"].startswith("Basic ")
    assert sent["body"]["title"] == made.title and sent["body"]["message"] == made.text().rstrip(
        "\n"
    )
    assert sent["body"]["type"] == "warning"
    no_secret_anywhere(caplog, capfd)


def test_rollout_stopped_alert(connections, caplog, capfd):
    """What a stopped rollout hands the alert (steps.rollout._stop: stage, the SLO breached,
    what it did, the challenger), delivered to all three destinations."""
    from retrainer.orchestration.notify import alert
    from retrainer.steps.alerts import rollout_stopped_alert

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    s = spec()
    breach = (
        "error_rate 0.15 breaches its limit 0.01 (30 failed of 200 requests, 30 answered by "
        "the champion instead)"
    )
    made = rollout_stopped_alert(
        s, "canary step 2", [breach], "v5 out of traffic; v4 answers all", "deploy__7", version="5"
    )
    assert alert(s, made) == {"alert_mail": "sent", "alert_hook": "sent", "alert_apprise": "sent"}
    (body,), by_path = delivered(box, hooks, 1, ["/alerts", "/apprise"])
    assert box.messages[0]["Subject"].strip() == f"[{MODEL}] rollout of v5 stopped at canary step 2"
    assert f"model: {MODEL} (version 5)" in body and breach in body
    assert "what the automation did: v5 out of traffic; v4 answers all" in body
    assert f"to act: retrainer history {MODEL}" in body
    assert f"/dags/{MODEL}_deploy/runs/deploy__7" in body
    assert "runbook: README.md#a-rollout-stopped" in body
    assert by_path["/alerts"]["body"]["event"] == "rollout_stopped"
    assert by_path["/alerts"]["body"]["version"] == "5"
    assert by_path["/apprise"]["body"]["message"] == body.rstrip("\n")
    assert by_path["/apprise"]["body"]["type"] == "failure"  # critical
    no_secret_anywhere(caplog, capfd)


def test_a_failed_apprise_send_is_a_failure(connections, monkeypatch, caplog, capfd):
    """Apprise reports a failed delivery in its result, not by raising: a destination nobody
    listens on is reported as not sent (and logged without the URL's password), like the other
    channels, and the caller goes on."""
    from retrainer.orchestration.notify import alert
    from retrainer.steps.alerts import rollout_stopped_alert

    caplog.set_level(logging.DEBUG)
    box, hooks = connections
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_APPRISE", apprise_conn(testenv.free_port()))
    s = spec()
    made = rollout_stopped_alert(
        s, "shadow", ["agreement 0.91 < 0.98"], "v3 out", "d__1", version="3"
    )
    outcome = alert(s, made)
    assert outcome["alert_mail"] == "sent" and outcome["alert_hook"] == "sent"
    assert outcome["alert_apprise"].startswith("RuntimeError: Apprise did not deliver"), outcome
    # Named by Apprise's privacy URL: the destination without its credentials.
    assert "JSON json://retrainer:****@127.0.0.1:" in outcome["alert_apprise"]
    assert "NOT sent through connection alert_apprise" in caplog.text
    assert "alert rollout_stopped for plug_alert sent through connection alert_apprise" not in (
        caplog.text
    )
    assert [h["path"] for h in hooks] == ["/alerts"]
    no_secret_anywhere(caplog, capfd)


@pytest.fixture
def rude_receiver():
    """A webhook receiver on loopback that answers 200 with an endless body (mode "huge") or
    trickles its status line a byte a second (mode "drip")."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    mode = {"now": "huge"}
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    if mode["now"] == "huge":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000000\r\n\r\n")
                        chunk = b"x" * 1_000_000
                        for _ in range(2000):
                            if stop.is_set():
                                break
                            conn.sendall(chunk)
                    else:
                        for byte in b"HTTP/1.1 200 OK\r\n":
                            if stop.is_set():
                                break
                            conn.sendall(bytes([byte]))
                            time.sleep(1)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, mode
    stop.set()
    server.close()
    thread.join(10)


def test_a_rude_webhook_costs_neither_memory_nor_more_than_its_deadline(rude_receiver, monkeypatch):
    """A receiver answering with 2 GB is told apart by its status alone (the body is never
    read); one that trickles a byte a second is cut off at the delivery deadline, which bounds
    the whole send, not each read."""
    import resource

    from retrainer.orchestration import notify
    from retrainer.steps.alerts import rollback_alert

    port, mode = rude_receiver
    monkeypatch.setenv(
        "AIRFLOW_CONN_RUDE", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port})
    )
    monkeypatch.setattr(notify, "DELIVERY_SECONDS", 3.0)
    s = spec()
    made = rollback_alert(
        s, {"from": "2", "to": "1", "ledger_run_id": "x", "reload_error": ""}, "boom", "d"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    assert notify.send(made, ["rude"]) == {"rude": "sent"}
    assert time.monotonic() - started < 3
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 100, f"the worker grew by {grown_mb:.0f} MB"
    mode["now"] = "drip"
    started = time.monotonic()
    outcome = notify.send(made, ["rude"])
    assert 2.5 < time.monotonic() - started < 6
    assert outcome["rude"].startswith("TimeoutError: no delivery within 3 s")
