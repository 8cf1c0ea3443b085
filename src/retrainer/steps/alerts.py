"""Alerts: a decision record rendered for people, once per change of state.

Each alert says which model and version, what was measured against which limit, the features
responsible, what the automation did, where to look (the Airflow run, the MLflow run, the
dashboard panel, the README's runbook) and the command that acts on it. Nothing here sends:
`retrainer.orchestration.notify` delivers through the spec's Airflow connections.

One alert per change of state: the monitor alerts when its decided state changes (ok -> warn,
warn -> retrain, ...), not on every daily check of a drift that persists; a gate rejection, a
rollback and a task that failed for good are each a new state.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from retrainer.config import links as ui
from retrainer.config.settings import Settings, get_settings
from retrainer.spec import ModelSpec

SEVERITY = {
    "monitor_warn": "warning",
    "monitor_retrain": "critical",
    "monitor_schema_changed": "critical",
    "gate_rejected": "warning",
    "deploy_rolled_back": "critical",
    "rollout_stopped": "critical",
    "task_failed": "critical",
}
RUNBOOK = {
    "monitor_warn": "drift-alarm",
    "monitor_retrain": "drift-alarm",
    "monitor_schema_changed": "drift-alarm",
    "gate_rejected": "the-gate-rejected-the-candidate",
    "deploy_rolled_back": "a-deployment-failed",
    "rollout_stopped": "a-rollout-stopped",
    "task_failed": "a-task-failed",
}
# Panels of infra/grafana/dashboards/retrainer.json.
PANEL = {"monitor": 5, "deploy": 4, "task": 8}


@dataclass(frozen=True)
class Alert:
    event: str
    model: str
    title: str
    severity: str
    version: str | None
    measured: list[str]  # what was measured, against which limit
    features: list[str]  # the features (or checks) responsible
    action: str  # what the automation did
    command: str  # what a person runs to act on it
    links: dict[str, str] = field(default_factory=dict)
    state: str = ""  # the state this alert announces (dedup key)

    def text(self) -> str:
        lines = [
            self.title,
            "",
            f"model: {self.model}" + (f" (version {self.version})" if self.version else ""),
            f"severity: {self.severity}",
            "",
            "what was measured:",
            *[f"  - {m}" for m in self.measured],
        ]
        if self.features:
            lines += ["", "responsible: " + ", ".join(self.features)]
        lines += ["", f"what the automation did: {self.action}", "", f"to act: {self.command}"]
        lines += ["", "links:", *[f"  {k}: {v}" for k, v in self.links.items()]]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"text": self.text()}


def _links(
    settings: Settings,
    event: str,
    dag_id: str = "",
    dag_run_id: str = "",
    mlflow_run_id: str = "",
    experiment_id: str | None = None,
    panel: str = "",
) -> dict[str, str]:
    links: dict[str, str] = {}
    if dag_id and dag_run_id:
        links["airflow run"] = ui.airflow_run(settings, dag_id, dag_run_id)
    if mlflow_run_id:
        links["mlflow run"] = ui.mlflow_run(settings, mlflow_run_id, experiment_id)
    grafana = os.environ.get("RETRAINER_GRAFANA_URL", "").rstrip("/")
    if grafana and panel:
        links["dashboard"] = f"{grafana}/d/retrainer/retrainer?viewPanel={PANEL[panel]}"
    docs = os.environ.get("RETRAINER_DOCS_URL", "README.md").rstrip("/")
    links["runbook"] = f"{docs}#{RUNBOOK[event]}"
    if dag_id:
        model = dag_id.rsplit("_", 1)[0]
        links["models page"] = f"{settings.airflow_ui_url}/retrainer/models?model={quote(model)}"
    return links


def monitor_state(decision: str, previous: str | None) -> str:
    """The monitor's state after a check: a decided check sets it, others keep the last one."""
    from retrainer.steps.monitor.decision import DECIDED

    return decision if decision in DECIDED else (previous or "")


def monitor_alert(
    spec: ModelSpec,
    measured: dict[str, Any],
    action: str,
    detail: str,
    dag_run_id: str,
    settings: Settings | None = None,
) -> Alert | None:
    """The alert for a monitor check, or None when its state did not change (or it is ok)."""
    settings = settings or get_settings()
    d = measured["decision"]
    decision = d["decision"]
    event = f"monitor_{decision}"
    if event not in SEVERITY or measured.get("previous_state") == decision:
        return None
    top = sorted(((v, k) for k, v in (d.get("psi") or {}).items() if v is not None), reverse=True)[
        :5
    ]
    measured_lines = [
        f"PSI {k} {v:.3f} (warn at {d['psi_warn']:g}, retrain at {d['psi_retrain']:g})"
        for v, k in top
    ]
    window = d.get("window") or {}
    measured_lines.append(
        f"window {window.get('start') or 'beginning'} .. {window.get('end')}: {d['rows']} rows; "
        f"sampling noise alone gives PSI about {d['noise_floor']:.3f}"
        if d.get("noise_floor") is not None
        else f"window of {d['rows']} rows"
    )
    labels = d.get("labels") or {}
    if labels.get("value") is not None:
        measured_lines.append(
            f"{labels['metric']} {labels['value']:.4f} on {labels['rows']} labelled rows"
            + (f" (gate threshold {labels['threshold']:g})" if labels.get("threshold") else "")
        )
    measured_lines += [r for r in d.get("reasons", []) if r not in measured_lines][:5]
    did = {
        "triggered": f"retrain queued: {spec.retrain_dag_id} ({detail})",
        "cooldown": f"retrain held by the cooldown: {detail}",
        "in_flight": f"no new retrain: {detail}",
        "none": "nothing (an alert for people)",
    }.get(action, action or "nothing")
    if decision == "schema_changed":
        did = "nothing: retraining on broken inputs would not help; fix the traffic's producer"
    command = {
        "retrain": f"retrainer trigger {spec.name} (after the new data has landed)",
        "warn": f"retrainer drift -r TRAIN -c WINDOW --spec {spec.name}",
        "schema_changed": f"retrainer monitor {spec.name} (after fixing the producer)",
    }[decision]
    return Alert(
        event=event,
        model=spec.name,
        title=f"[{spec.name}] monitor: {decision} (was {measured.get('previous_state') or 'none'})",
        severity=SEVERITY[event],
        version=d.get("champion_version"),
        measured=measured_lines,
        features=list(d.get("features") or []),
        action=did,
        command=command,
        links=_links(
            settings,
            event,
            spec.monitor_dag_id,
            dag_run_id,
            measured.get("mlflow_run_id", ""),
            measured.get("experiment_id"),
            "monitor",
        ),
        state=decision,
    )


def gate_alert(
    spec: ModelSpec, gated: dict[str, Any], dag_run_id: str, settings: Settings | None = None
) -> Alert | None:
    """The alert for a rejected candidate (None when it passed)."""
    settings = settings or get_settings()
    g = gated["gate"]
    if g["decision"] != "rejected":
        return None
    measured = []
    for c in g.get("checks", []):
        bound = " ".join(
            x
            for x in (
                f">= {c['minimum']:g}" if c.get("minimum") is not None else "",
                f"<= {c['maximum']:g}" if c.get("maximum") is not None else "",
            )
            if x
        )
        vs = f", champion {c['champion']:.4f}" if c.get("champion") is not None else ""
        measured.append(
            f"{c['metric']} {c['candidate']:.4f}{vs}"
            + (f" (bound {bound})" if bound else "")
            + ("" if c.get("passed", True) else " FAIL")
        )
    return Alert(
        event="gate_rejected",
        model=spec.name,
        title=f"[{spec.name}] gate rejected the candidate of {dag_run_id}",
        severity=SEVERITY["gate_rejected"],
        version=None,  # nothing was registered
        measured=measured + list(g.get("reasons", [])),
        features=[c["metric"] for c in g.get("checks", []) if not c.get("passed", True)],
        action=f"nothing registered; champion v{g.get('champion_version')} keeps serving",
        command=f"retrainer trigger {spec.name} --reason ... (after improving data or model)",
        links=_links(
            settings,
            "gate_rejected",
            spec.retrain_dag_id,
            dag_run_id,
            gated.get("mlflow_run_id", ""),
            gated.get("experiment_id"),
        ),
        state=f"rejected:{dag_run_id}",
    )


def rollback_alert(
    spec: ModelSpec,
    done: dict[str, Any],
    error: str,
    dag_run_id: str,
    settings: Settings | None = None,
) -> Alert:
    settings = settings or get_settings()
    return Alert(
        event="deploy_rolled_back",
        model=spec.name,
        title=f"[{spec.name}] deployment of v{done['from']} failed; rolled back to v{done['to']}",
        severity=SEVERITY["deploy_rolled_back"],
        version=str(done["from"]),
        measured=[error[:1000]]
        + ([f"reload after rollback: {done['reload_error']}"] if done.get("reload_error") else []),
        features=[],
        action=f"champion moved back to v{done['to']}; serving reloaded it; v{done['from']} tagged failed",
        command=f"retrainer history {spec.name}; fix the cause, then retrainer trigger {spec.name}",
        links=_links(
            settings,
            "deploy_rolled_back",
            spec.deploy_dag_id,
            dag_run_id,
            done.get("ledger_run_id", ""),
            None,
            "deploy",
        ),
        state=f"rolled_back:{dag_run_id}",
    )


def rollout_stopped_alert(
    spec: ModelSpec,
    stage: str,
    measured: list[str],
    action: str,
    dag_run_id: str,
    settings: Settings | None = None,
    version: str | None = None,
) -> Alert:
    """A rollout (shadow -> canary -> promote) that stopped at `stage`: what was measured
    against which limit, what the automation did; `version` is the challenger it stopped."""
    settings = settings or get_settings()
    return Alert(
        event="rollout_stopped",
        model=spec.name,
        title=f"[{spec.name}] rollout"
        + (f" of v{version}" if version else "")
        + f" stopped at {stage}",
        severity=SEVERITY["rollout_stopped"],
        version=version,
        measured=measured,
        features=[],
        action=action,
        command=f"retrainer history {spec.name}",
        links=_links(settings, "rollout_stopped", spec.deploy_dag_id, dag_run_id, panel="deploy"),
        state=f"rollout_stopped:{dag_run_id}",
    )


def task_failed_alert(
    spec: ModelSpec,
    dag_id: str,
    dag_run_id: str,
    task_id: str,
    try_number: int,
    error: str,
    settings: Settings | None = None,
) -> Alert:
    settings = settings or get_settings()
    return Alert(
        event="task_failed",
        model=spec.name,
        title=f"[{spec.name}] {dag_id}.{task_id} failed after {try_number} attempt(s)",
        severity=SEVERITY["task_failed"],
        version=None,
        measured=[error[:1000] or "(no error message)"],
        features=[],
        action="the DAG run stopped at this task; nothing after it ran",
        command=f"retrainer airflow tasks clear {dag_id} -t {task_id} (after fixing the cause)",
        links=_links(settings, "task_failed", dag_id, dag_run_id, panel="task"),
        state=f"failed:{dag_run_id}:{task_id}",
    )
