"""Run the platform: start, stop and inspect its services, the real Airflow and MLflow CLIs, copy models between profiles."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from retrainer.cli.common import PASSTHROUGH, _login, _settings, console, err, fail
from retrainer.config.environment import process_environment
from retrainer.errors import RetrainerError

app = typer.Typer()


@app.command()
def up(
    profile: Annotated[
        str | None,
        typer.Option(help="embedded (default) or production; default RETRAINER_PROFILE"),
    ] = None,
) -> None:
    """Start the platform in the background: Airflow's parts, MLflow, serving (and a Celery
    worker in production)."""
    from retrainer.platform import services

    if profile:
        os.environ["RETRAINER_PROFILE"] = profile
    try:
        settings = _settings()
        _ = settings.resources  # a production profile missing configuration fails here, clearly
    except (RetrainerError, ValueError) as exc:
        fail(str(exc))
        return
    try:
        with console.status("starting services..."):
            services.start(settings, say=console.print)
    except RetrainerError as exc:
        fail(str(exc))
    console.print(f"\nAirflow UI  {settings.airflow_ui_url}  (login {_login(settings)})")
    console.print(f"MLflow UI   {settings.mlflow_ui_url}")
    console.print(f"Serving API {settings.serving_url}  (/models/<name>/predict, /metrics, /docs)")
    console.print(f"State       {settings.home}    stop with `retrainer down`")


@app.command()
def init() -> None:
    """Create the state folder, migrate Airflow's database, create the bucket (containers run
    this once before the other services)."""
    from retrainer.platform import services

    try:
        services.init_state(_settings(), say=console.print)
    except RetrainerError as exc:
        fail(str(exc))


@app.command("mlflow-server")
def mlflow_server() -> None:
    """Run the profile's MLflow tracking server in the foreground (what containers run)."""
    from retrainer.platform import services

    settings = _settings()
    try:
        if settings.resources.mlflow_auth:
            services.write_mlflow_auth_config(settings)
        env = services.service_env(settings)
    except RetrainerError as exc:
        fail(str(exc))
        return
    argv = services.mlflow_server_argv(settings)
    os.execvpe(argv[0], argv, env)


@app.command()
def down() -> None:
    """Stop everything `retrainer up` started for this state folder."""
    from retrainer.platform import services

    services.stop(_settings(), say=console.print)


@app.command()
def status() -> None:
    """Show which services run and answer."""
    from retrainer.platform import services

    settings = _settings()
    table = Table("service", "state", "detail")
    for name, state, detail in services.status(settings):
        color = {"running": "green", "stopped": "dim", "unhealthy": "red"}[state]
        table.add_row(name, f"[{color}]{state}[/]", detail)
    console.print(table)
    console.print(
        f"state folder {settings.home}; Airflow {settings.airflow_ui_url}; MLflow {settings.mlflow_ui_url}"
    )


@app.command()
def env() -> None:
    """Print shell exports pointing Airflow and MLflow at the state folder: eval "$(retrainer env)"."""
    import shlex

    for key, value in process_environment(_settings()).items():
        if key.endswith(("PASSWORD", "SECRET", "SECRET_KEY", "TOKEN")):
            # Secrets stay where they came from (the environment, a secret store).
            print(f"# {key} is set; not printed")
        else:
            print(f"export {key}={shlex.quote(value)}")


def _exec_tool(tool: str, args: list[str]) -> None:
    from retrainer.platform import services

    settings = _settings()
    try:
        services.init_state(settings, say=err.print)
    except RetrainerError as exc:
        fail(str(exc))
    env = services.service_env(settings)
    argv = (
        services.airflow_argv(args)
        if tool == "airflow"
        else [str(services.venv_bin() / tool), *args]
    )
    os.execvpe(argv[0], argv, env)


@app.command(context_settings=PASSTHROUGH)
def airflow(ctx: typer.Context) -> None:
    """Run the real `airflow` CLI against this state folder (initialised on first use)."""
    _exec_tool("airflow", list(ctx.args))


@app.command(context_settings=PASSTHROUGH)
def mlflow(ctx: typer.Context) -> None:
    """Run the real `mlflow` CLI against this state folder's tracking store."""
    _exec_tool("mlflow", list(ctx.args))


@app.command("copy-models")
def copy_models_command(
    source: Annotated[
        str,
        typer.Option(
            "--from", help="source tracking URI, e.g. sqlite:///.retrainer/mlflow/mlflow.db"
        ),
    ],
    model: Annotated[
        list[str] | None, typer.Option("--model", help="only these models (repeatable)")
    ] = None,
) -> None:
    """Copy registered models, their runs and aliases from another MLflow store into this profile's."""
    from retrainer.platform.migrate import copy_models
    from retrainer.stores.tracking import mlflow_client

    settings = _settings()
    local = (
        None
        if settings.tracking_uri.startswith(("http://", "https://"))
        else settings.artifact_root
    )
    with console.status(f"copying from {source} to {settings.tracking_uri}..."):
        copied = copy_models(source, mlflow_client(settings), model or None, artifact_root=local)
    table = Table("model", "source version", "target version", "")
    for c in copied:
        table.add_row(
            c.name, c.source_version, c.target_version, "already copied" if c.skipped else "copied"
        )
    console.print(table)
