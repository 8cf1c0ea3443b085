"""Deliver alerts through the Airflow connections a spec names: SMTP, a webhook, or Apprise
(Slack, Teams, e-mail, ... from one connection). Destinations and their secrets live in the
connections (or the environment, as `AIRFLOW_CONN_<ID>`), never in specs; logs name the
connection id and the outcome, never a host's credentials.

Delivery is best effort: an unreachable destination is logged and never fails the task that
made the decision (the decision is recorded in MLflow either way).
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    from retrainer.steps.alerts import Alert

log = logging.getLogger(__name__)
TIMEOUT = 15.0  # each network operation (connect, one read)
DELIVERY_SECONDS = 30.0  # one destination, all in: a receiver that trickles is cut off here


def get_connection(conn_id: str) -> Any:
    from airflow.sdk import Connection

    return Connection.get(conn_id)


def _redact(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def send_smtp(conn: Any, alert: Alert) -> None:
    extra = conn.extra_dejson
    to = extra.get("to") or extra.get("to_email") or []
    if isinstance(to, str):
        to = [t.strip() for t in to.split(",") if t.strip()]
    if not to:
        raise ValueError(f"connection {conn.conn_id}: extra.to (the recipients) is empty")
    msg = EmailMessage()
    msg["Subject"] = alert.title
    msg["From"] = extra.get("from_email") or f"retrainer@{conn.host or 'localhost'}"
    msg["To"] = ", ".join(to)
    msg["X-Retrainer-Event"] = alert.event
    msg.set_content(alert.text())
    port = int(conn.port or 25)
    use_ssl = not extra.get("disable_ssl", port != 465)
    smtp_cls = smtplib.SMTP_SSL if use_ssl else smtplib.SMTP
    with smtp_cls(
        conn.host or "localhost", port, timeout=float(extra.get("timeout", TIMEOUT))
    ) as smtp:
        if not use_ssl and not extra.get("disable_tls", False) and smtp.has_extn("starttls"):
            smtp.starttls()
        if conn.login:
            smtp.login(conn.login, conn.password or "")
        smtp.send_message(msg)


def webhook_url(conn: Any) -> str:
    host = conn.host or ""
    if "://" not in host:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
        host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = conn.extra_dejson.get("endpoint", "")
    return host.rstrip("/") + ("/" + endpoint.lstrip("/") if endpoint else "")


def send_webhook(conn: Any, alert: Alert) -> None:
    import httpx

    headers = {"Content-Type": "application/json"}
    if conn.password:
        headers["Authorization"] = f"Bearer {conn.password}"
    # The status is all that is wanted: the body is never read (a receiver answering with a
    # gigabyte would otherwise be held in the worker's memory)
    with httpx.stream(
        "POST", webhook_url(conn), json=alert.to_dict(), headers=headers, timeout=TIMEOUT
    ) as resp:
        if resp.status_code >= 300:
            raise RuntimeError(f"the webhook answered {resp.status_code}")


def apprise_urls(conn: Any) -> list[str]:
    """The Apprise URLs of an `apprise` connection (extra.config, as Airflow's provider reads it:
    {"path": URL, "tag": ...} or a list of them)."""
    from airflow.providers.apprise.hooks.apprise import AppriseHook

    config = AppriseHook(apprise_conn_id=conn.conn_id).get_config_from_conn(conn=conn)
    entries = config if isinstance(config, list) else [config]
    return [str(e["path"]) for e in entries if isinstance(e, dict) and e.get("path")]


def apprise_secrets(conn: Any) -> list[str]:
    """What of an Apprise URL may be a secret: the URL, its password, its path segments and
    query values (Slack, Teams and most services carry their tokens there)."""
    from urllib.parse import parse_qsl, urlsplit

    secrets: list[str] = []
    try:
        urls = apprise_urls(conn)
    except Exception:
        return secrets
    for url in urls:
        secrets.append(url)
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        secrets += [parts.password] if parts.password else []
        secrets += [seg for seg in parts.path.split("/") if len(seg) >= 8]
        secrets += [v for _, v in parse_qsl(parts.query) if len(v) >= 8]
    # Longest first: a token inside a URL is replaced after the whole URL was.
    return sorted(set(secrets), key=len, reverse=True)


def send_apprise(conn: Any, alert: Alert) -> None:
    """Through Apprise, with the destinations of the connection's extra.config (Airflow's
    Apprise provider reads the same field). Apprise reports a failed delivery in its result,
    not as an exception (and Airflow's `AppriseHook.notify` drops that result): a destination
    that did not take the alert raises here, naming it by Apprise's privacy URL."""
    import apprise
    from airflow.providers.apprise.hooks.apprise import AppriseHook

    destinations = apprise.Apprise()
    AppriseHook(apprise_conn_id=conn.conn_id).set_config_from_conn(
        conn=conn, apprise_obj=destinations
    )
    if not len(destinations):
        raise ValueError(f"connection {conn.conn_id}: extra.config holds no URL Apprise accepts")
    kind = (
        apprise.NotifyType.FAILURE if alert.severity == "critical" else apprise.NotifyType.WARNING
    )
    # Plain text: the alert quotes data (a bad category value, a column name), and without a
    # format Apprise hands it to Slack as mrkdwn, where "<!channel>" pings everyone and
    # "<https://x|Re-run here>" is a disguised link inside a genuine alert
    result = destinations.notify(
        body=alert.text(),
        title=alert.title,
        notify_type=kind,
        body_format=apprise.NotifyFormat.TEXT,
        timeout=TIMEOUT,
    )
    if not result:
        failed = [f"{r.name} {r.url} ({r.status.name.lower()})" for r in result if not r]
        raise RuntimeError(
            f"Apprise did not deliver ({result.status.name.lower()}): "
            + ("; ".join(failed) or "no destination was notified")
        )


SENDERS: dict[str, Callable[[Any, Alert], None]] = {
    "smtp": send_smtp,
    "email": send_smtp,
    "http": send_webhook,
    "https": send_webhook,
    "webhook": send_webhook,
    "apprise": send_apprise,
}


def send(alert: Alert | None, conn_ids: list[str]) -> dict[str, str]:
    """Deliver `alert` to each connection; returns conn_id -> "sent" or what went wrong."""
    outcome: dict[str, str] = {}
    if alert is None:
        return outcome
    for conn_id in conn_ids:
        conn = None
        try:
            conn = get_connection(conn_id)
            sender = SENDERS.get(str(conn.conn_type).lower())
            if sender is None:
                raise ValueError(
                    f"connection type {conn.conn_type!r} is not an alert destination; use one "
                    f"of {sorted(SENDERS)}"
                )
            within(DELIVERY_SECONDS, sender, conn, alert)
            outcome[conn_id] = "sent"
            log.info(
                "alert %s for %s sent through connection %s", alert.event, alert.model, conn_id
            )
        except Exception as exc:
            secrets = [getattr(conn, "password", None)]
            if conn is not None and str(conn.conn_type).lower() == "apprise":
                secrets += apprise_secrets(conn)
            why = _redact(f"{type(exc).__name__}: {exc}", *secrets)[:300]
            outcome[conn_id] = why
            log.warning(
                "alert %s for %s NOT sent through connection %s: %s (check the connection: "
                "`airflow connections get %s`)",
                alert.event,
                alert.model,
                conn_id,
                why,
                conn_id,
            )
    return outcome


def within(seconds: float, fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)``, raising TimeoutError if it has not returned within ``seconds``: the
    network timeouts bound each operation, not a receiver that answers a byte at a time. The
    call is left to end in a daemon thread, which never holds the task's process open."""
    import threading

    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=run, name="retrainer-alert", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(
            f"no delivery within {seconds:g} s: the destination is slow or holds the connection "
            "open"
        )
    if failed:
        raise failed[0]


def alert(spec: ModelSpec, made: Alert | None) -> dict[str, str]:
    """Send an alert to the destinations the spec routes its event to."""
    if made is None:
        return {}
    return send(made, spec.alert_destinations(made.event))


def on_task_failed(spec: ModelSpec) -> Callable[[Any], None]:
    """`on_failure_callback` for the model's tasks: runs once a task has failed for good."""

    def callback(context: Any) -> None:
        from retrainer.steps.alerts import task_failed_alert

        ti = context["ti"]
        error = context.get("exception")
        alert(
            spec,
            task_failed_alert(
                spec,
                ti.dag_id,
                context["run_id"],
                ti.task_id,
                int(getattr(ti, "try_number", 1) or 1),
                f"{type(error).__name__}: {error}" if error else "",
            ),
        )

    return callback
