"""The `retrainer` command: run the platform, validate specs and data, drive the DAGs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from retrainer.errors import RetrainerError
from retrainer.settings import Settings, get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
specs_app = typer.Typer(help="Model specs: check them.", no_args_is_help=True)
app.add_typer(specs_app, name="specs")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def _settings() -> Settings:
    return get_settings()


@app.command()
def up() -> None:
    """Start the embedded platform in the background: Airflow (SQLite, LocalExecutor) and MLflow."""
    from retrainer import services

    settings = _settings()
    try:
        with console.status("starting services..."):
            services.start(settings, say=console.print)
    except RetrainerError as exc:
        fail(str(exc))
    user, password = settings.airflow_credentials()
    console.print(f"\nAirflow UI  {settings.airflow_url}  (login {user} / {password})")
    console.print(f"MLflow UI   {settings.mlflow_url}")
    console.print(f"Serving API {settings.serving_url}  (/models/<name>/predict, /metrics, /docs)")
    console.print(f"State       {settings.home}    stop with `retrainer down`")


@app.command()
def down() -> None:
    """Stop everything `retrainer up` started for this state folder."""
    from retrainer import services

    services.stop(_settings(), say=console.print)


@app.command()
def status() -> None:
    """Show which services run and answer."""
    from retrainer import services

    settings = _settings()
    table = Table("service", "state", "detail")
    for name, state, detail in services.status(settings):
        color = {"running": "green", "stopped": "dim", "unhealthy": "red"}[state]
        table.add_row(name, f"[{color}]{state}[/]", detail)
    console.print(table)
    console.print(
        f"state folder {settings.home}; Airflow {settings.airflow_url}; MLflow {settings.mlflow_url}"
    )


@app.command()
def env() -> None:
    """Print shell exports pointing Airflow and MLflow at the state folder: eval "$(retrainer env)"."""
    import shlex

    for key, value in _settings().environment().items():
        print(f"export {key}={shlex.quote(value)}")


def _exec_tool(tool: str, args: list[str]) -> None:
    from retrainer import services

    settings = _settings()
    try:
        services.init_state(settings, say=err.print)
    except RetrainerError as exc:
        fail(str(exc))
    env = services.service_env(settings)
    exe = str(services.venv_bin() / tool)
    os.execvpe(exe, [exe, *args], env)


@app.command(context_settings=PASSTHROUGH)
def airflow(ctx: typer.Context) -> None:
    """Run the real `airflow` CLI against this state folder (initialised on first use)."""
    _exec_tool("airflow", list(ctx.args))


@app.command(context_settings=PASSTHROUGH)
def mlflow(ctx: typer.Context) -> None:
    """Run the real `mlflow` CLI against this state folder's tracking store."""
    _exec_tool("mlflow", list(ctx.args))


@app.command()
def validate(
    spec: Annotated[str, typer.Argument(help="model name or path to its YAML spec")],
    data: Annotated[str | None, typer.Option("--data", help="file, folder or s3:// prefix")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="also write the HTML report here")
    ] = None,
) -> None:
    """Validate a data batch against a spec's expectations; exit 1 listing every failure."""
    from retrainer.pipeline import resolve_source
    from retrainer.spec import find_spec

    settings = _settings()
    try:
        model = find_spec(settings.models_dir, spec)
        source = data or resolve_source(model.data.train, settings)
        with console.status(f"reading {source}..."):
            from retrainer import storage

            df = storage.read_table(source)
        with console.status(f"running {model.name}'s expectation suite (Great Expectations)..."):
            from retrainer.validation import validate_frame

            report = validate_frame(df, model, source)
    except RetrainerError as exc:
        fail(str(exc))
        return
    if html:
        html.write_text(report.to_html(f"{model.name}: validation of {source}"))
    table = Table("", "column", "expectation", "observed", title=f"{model.name}: {source}")
    for r in sorted(report.results, key=lambda r: r.success):
        table.add_row(
            "[green]ok[/]" if r.success else "[red]FAIL[/]",
            r.column or "(table)",
            r.description,
            r.observed,
        )
    console.print(table)
    if not report.success:
        err.print(report.summary(), highlight=False, markup=False)
        raise typer.Exit(1)
    console.print(
        f"[green]passed[/]: {len(report.results)} expectations on {report.row_count} rows"
    )


@specs_app.command("check")
def specs_check() -> None:
    """Validate every spec in the models folder; exit 1 if any is broken."""
    from retrainer.spec import iter_specs

    settings = _settings()
    broken = 0
    found = 0
    for path, spec in iter_specs(settings.models_dir):
        found += 1
        if isinstance(spec, Exception):
            broken += 1
            err.print(f"[red]BROKEN[/] {spec}", highlight=False)
        else:
            console.print(f"[green]ok[/]     {path}  ->  {spec.retrain_dag_id}", highlight=False)
    if not found:
        fail(f"no model specs (*.yaml) in {settings.models_dir}; set RETRAINER_MODELS_DIR")
    if broken:
        raise typer.Exit(1)


def _client() -> Any:
    from retrainer.airflow_api import AirflowClient

    settings = _settings()
    user, password = settings.airflow_credentials()
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
        f"triggered {dag_id} run {run_id}\n  {settings.airflow_url}/dags/{dag_id}/runs/{run_id}"
    )
    if not wait:
        return run

    show = state_printer()

    with console.status("running..."):
        run = client.wait_for_run(dag_id, run_id, timeout=timeout, on_change=show)
    return run


@app.command()
def trigger(
    model: Annotated[str, typer.Argument(help="model name")],
    data: Annotated[
        str | None, typer.Option("--data", help="train on this file/folder/s3 prefix")
    ] = None,
    reason: Annotated[str, typer.Option(help="recorded on the MLflow run")] = "manual (cli)",
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
) -> None:
    """Trigger MODEL's retrain DAG through the Airflow API and follow it."""
    from retrainer.spec import find_spec

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        run = trigger_and_wait(spec.retrain_dag_id, {"data_path": data, "reason": reason}, wait)
    except RetrainerError as exc:
        fail(str(exc))
        return
    if wait:
        _report_run(spec.name, spec.retrain_dag_id, run)


def _report_run(name: str, dag_id: str, run: dict[str, Any], exit_on_failure: bool = True) -> None:
    from retrainer.report import retrain_outcome

    settings = _settings()
    outcome = retrain_outcome(name, dag_id, run["dag_run_id"], settings)
    state = run.get("state")
    console.print(
        f"\n[bold]{dag_id}[/] finished: [{'green' if state == 'success' else 'red'}]{state}[/]"
    )
    for line in outcome.lines():
        console.print(line, highlight=False)
    user, password = settings.airflow_credentials()
    console.print(
        f"\nAirflow UI  {settings.airflow_url}/dags/{dag_id}  (login {user} / {password})"
    )
    if outcome.mlflow_run_id:
        console.print(
            f"MLflow run  {settings.mlflow_url}/#/experiments/{outcome.experiment_id}/runs/{outcome.mlflow_run_id}"
        )
    console.print(f"MLflow UI   {settings.mlflow_url}/#/models/{name}")
    if state != "success" and exit_on_failure:
        raise typer.Exit(1)


@app.command()
def serve(
    model: Annotated[
        str | None,
        typer.Option("--model", help="also serve this model at /invocations (MLflow's protocol)"),
    ] = None,
    port: Annotated[int | None, typer.Option(help="default RETRAINER_SERVING_PORT (8000)")] = None,
    host: Annotated[str | None, typer.Option(help="default RETRAINER_HOST (127.0.0.1)")] = None,
    max_rows: Annotated[int, typer.Option(help="most rows in one request")] = 1000,
) -> None:
    """Serve the champion of every spec at /models/<name>/predict (FastAPI on uvicorn)."""
    import uvicorn

    from retrainer.serving.app import create_app

    settings = _settings()
    application = create_app(settings, default_model=model, max_rows=max_rows)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.serving_port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=10,
    )


@app.command()
def history(model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """The promotion ledger of MODEL: every promotion and rollback, newest first."""
    from datetime import UTC, datetime

    from retrainer.ledger import history as read_history
    from retrainer.pipeline import mlflow_client

    entries = read_history(mlflow_client(_settings()), model)
    if not entries:
        console.print(f"no promotions recorded for {model}")
        return
    table = Table(
        "when (UTC)", "action", "from", "to", "triggered by", "reason", "metrics", "DAG run"
    )
    for e in entries:
        when = datetime.fromtimestamp(e.time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(e.metrics.items())[:2])
        table.add_row(
            when,
            e.action,
            e.from_version or "-",
            e.to_version,
            e.triggered_by,
            e.reason[:60],
            metrics,
            e.dag_run_id,
        )
    console.print(table)


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="model name")],
    version: Annotated[
        str | None, typer.Option(help="version to serve (default: the `previous` alias)")
    ] = None,
    reason: Annotated[str, typer.Option(help="recorded in the ledger")] = "manual rollback (cli)",
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
) -> None:
    """Put an earlier version back behind the serving API, through MODEL's deploy DAG."""
    from retrainer.constants import ALIAS_PREVIOUS
    from retrainer.pipeline import mlflow_client
    from retrainer.registry import version_by_alias
    from retrainer.spec import find_spec

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        if version is None:
            prev = version_by_alias(mlflow_client(settings), spec.name, ALIAS_PREVIOUS)
            if prev is None:
                fail(
                    f"{spec.name} has no `previous` version to roll back to; name one with --version"
                )
                return
            version = str(prev.version)
        run = trigger_and_wait(
            spec.deploy_dag_id, {"version": version, "reason": reason, "origin": "manual"}, wait
        )
    except RetrainerError as exc:
        fail(str(exc))
        return
    if wait:
        console.print(f"{spec.deploy_dag_id} finished: {run.get('state')}")
        if run.get("state") != "success":
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


def _send_demo_requests(spec_name: str, data_path: Path, n: int = 5) -> None:
    import httpx
    import pandas as pd

    settings = _settings()
    info = httpx.get(f"{settings.serving_url}/models/{spec_name}", timeout=10).json()
    columns = [c["name"] for c in info["inputs"]]
    rows = pd.read_csv(data_path).sample(n, random_state=7)
    payload = [{c: (None if pd.isna(r[c]) else r[c]) for c in columns} for _, r in rows.iterrows()]
    table = Table(
        "Age",
        "Amount",
        "Income",
        "Home",
        "Job",
        "prediction",
        "P(label)",
        "version",
        title=f"POST {settings.serving_url}/models/{spec_name}/predict",
    )
    for row in payload:
        answer = httpx.post(
            f"{settings.serving_url}/models/{spec_name}/predict", json={"rows": [row]}, timeout=10
        ).json()
        p = answer["predictions"][0]
        table.add_row(
            *(str(row.get(c)) for c in ("Age", "Amount", "Income", "Home", "Job")),
            str(p["label"]),
            f"{p['probability']:.3f}",
            answer["model_version"],
        )
    console.print(table)


@app.command()
def demo(model: Annotated[str, typer.Option(help="model to run")] = "credit_default") -> None:
    """Retrain MODEL through the real scheduler, follow its deployment, and query the served model."""
    from retrainer.pipeline import resolve_source
    from retrainer.spec import find_spec

    settings = _settings()
    spec = find_spec(settings.models_dir, model)
    try:
        run = trigger_and_wait(spec.retrain_dag_id, {"reason": "make demo"})
    except RetrainerError as exc:
        fail(str(exc))
        return
    _report_run(spec.name, spec.retrain_dag_id, run, exit_on_failure=False)
    state = _follow_deploy(spec.name, spec.retrain_dag_id, run["dag_run_id"], spec.deploy_dag_id)
    if state is not None:
        console.print(
            f"{spec.deploy_dag_id} finished: [{'green' if state == 'success' else 'red'}]{state}[/]"
        )
    _send_demo_requests(spec.name, Path(resolve_source(spec.data.train, settings)))
    console.print(
        f"\nServing API {settings.serving_url}/docs    metrics {settings.serving_url}/metrics"
    )
    console.print(f"Ledger      retrainer history {spec.name}")
    if run.get("state") != "success" or state not in (None, "success"):
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """Registered models, their versions and aliases."""
    from retrainer.report import model_versions
    from retrainer.spec import iter_specs

    settings = _settings()
    table = Table("model", "version", "aliases", "gate", "primary metric", "DAG run")
    for _, spec in iter_specs(settings.models_dir):
        if isinstance(spec, Exception):
            continue
        for v in model_versions(spec.name, settings):
            table.add_row(
                spec.name,
                v["version"],
                ", ".join(v["aliases"]),
                v["gate"],
                v["metric"],
                v["dag_run_id"] or "",
            )
    console.print(table)


def main() -> None:  # pragma: no cover
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
