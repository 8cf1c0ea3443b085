"""The `retrainer` command: run the platform, validate specs and data, drive the DAGs."""

from __future__ import annotations

import os
import sys
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

    shown: dict[str, str] = {}

    def show(states: dict[str, str]) -> None:
        for task_id, state in states.items():
            if state != "None" and shown.get(task_id) != state:
                console.print(f"  {task_id:<20} {state}", highlight=False)
                shown[task_id] = state

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


def _report_run(name: str, dag_id: str, run: dict[str, Any]) -> None:
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
    if state != "success":
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
def demo(model: Annotated[str, typer.Option(help="model to run")] = "credit_default") -> None:
    """Run MODEL's retrain DAG through the real scheduler and show what happened."""
    trigger(model, data=None, reason="make demo", wait=True)


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
