"""What the commands share: the console, failing with a message, the Airflow client, following a run."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from retrainer.config.secrets import airflow_credentials
from retrainer.config.settings import Settings, get_settings
from retrainer.errors import RetrainerError

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def plain(value: object) -> str:
    """Text from the user's data (a column name, a value, a reason) for a Rich table cell or a
    printed line: brackets shown as written, never read as markup ("[/x]" would raise, "[red]"
    would restyle the rest)."""
    return escape(str(value))


def _settings() -> Settings:
    """The settings, or the command fails with what is wrong with them (no traceback)."""
    try:
        return get_settings()
    except (ValueError, RetrainerError) as exc:
        fail(str(exc))


def _login(settings: Settings) -> str:
    """The Airflow login to show: a configured password is never printed."""
    user, password = airflow_credentials(settings)
    if settings.airflow_admin_password:
        return f"{user} / the password in RETRAINER_AIRFLOW_ADMIN_PASSWORD"
    return f"{user} / {password}"


def _client() -> Any:
    from retrainer.platform.airflow_api import AirflowClient

    settings = _settings()
    user, password = airflow_credentials(settings)
    return AirflowClient(settings.airflow_url, user, password)


def state_printer() -> Callable[[dict[str, str]], None]:
    """A callback printing each task's state once, as it changes."""
    shown: dict[str, str] = {}

    def show(states: dict[str, str]) -> None:
        for task_id, state in states.items():
            if state != "None" and shown.get(task_id) != state:
                console.print(f"  {task_id:<20} {state}", highlight=False)
                shown[task_id] = state

    return show


def trigger_and_wait(
    dag_id: str, conf: dict[str, Any], wait: bool = True, timeout: float = 900
) -> dict[str, Any]:
    client = _client()
    with console.status(f"waiting for Airflow to load {dag_id}..."):
        client.wait_for_dag(dag_id)
    run = client.trigger(dag_id, conf)
    run_id = run["dag_run_id"]
    settings = _settings()
    console.print(
        f"triggered {dag_id} run {run_id}\n  {settings.airflow_ui_url}/dags/{dag_id}/runs/{run_id}"
    )
    if not wait:
        return run

    show = state_printer()

    with console.status("running..."):
        run = client.wait_for_run(dag_id, run_id, timeout=timeout, on_change=show)
    return run


def _report_run(name: str, dag_id: str, run: dict[str, Any], exit_on_failure: bool = True) -> None:
    from retrainer.stores.summaries import retrain_outcome

    settings = _settings()
    outcome = retrain_outcome(name, dag_id, run["dag_run_id"], settings)
    state = run.get("state")
    console.print(
        f"\n[bold]{dag_id}[/] finished: [{'green' if state == 'success' else 'red'}]{state}[/]"
    )
    for line in outcome.lines():
        console.print(line, highlight=False, markup=False)  # intervals in brackets are data
    console.print(
        f"\nAirflow UI  {settings.airflow_ui_url}/dags/{dag_id}  (login {_login(settings)})"
    )
    if outcome.mlflow_run_id:
        console.print(
            f"MLflow run  {settings.mlflow_ui_url}/#/experiments/{outcome.experiment_id}/runs/{outcome.mlflow_run_id}"
        )
    console.print(f"MLflow UI   {settings.mlflow_ui_url}/#/models/{name}")
    if state != "success" and exit_on_failure:
        raise typer.Exit(1)


def _follow_deploy(
    spec_name: str, retrain_dag_id: str, retrain_run_id: str, deploy_dag_id: str
) -> str | None:
    """Wait for the deploy run a retrain run triggered; its final state, or None if none was."""
    client = _client()
    deploy_run_id = client.xcom(retrain_dag_id, retrain_run_id, "trigger_deploy", "trigger_run_id")
    if not deploy_run_id:
        return None
    console.print(f"\nfollowing {deploy_dag_id} run {deploy_run_id}")
    show = state_printer()

    with console.status("deploying..."):
        run = client.wait_for_run(deploy_dag_id, deploy_run_id, timeout=600, on_change=show)
    return str(run.get("state"))


def _print_check(spec: Any, run: dict[str, Any]) -> dict[str, Any] | None:
    from retrainer.steps.monitor.checks import check_for_run

    settings = _settings()
    check = check_for_run(spec, run["dag_run_id"], settings)
    state = run.get("state")
    console.print(
        f"{spec.monitor_dag_id} finished: [{'green' if state == 'success' else 'red'}]{state}[/]"
    )
    if check is None or not check["decision"]:
        console.print("  no decision recorded: see the task logs in the Airflow UI")
        return None
    d = check["decision"]
    console.print(
        f"  decision [bold]{plain(d['decision'])}[/]: {plain('; '.join(d['reasons']))}",
        highlight=False,
    )
    top = sorted(((v, k) for k, v in d["psi"].items() if v is not None), reverse=True)[:5]
    console.print("  top PSI: " + ", ".join(f"{plain(k)} {v:.3f}" for v, k in top), highlight=False)
    labels = d.get("labels") or {}
    if labels.get("value") is not None:
        console.print(
            f"  delayed labels: {labels['metric']} {labels['value']:.3f} on {labels['rows']} rows",
            highlight=False,
        )
    if check["action"]:
        console.print(f"  action: {check['action']} {check['action_detail']}", highlight=False)
    console.print(
        f"  MLflow: {settings.mlflow_ui_url}/#/experiments/{check['experiment_id']}/runs/{check['mlflow_run_id']}"
    )
    return check
