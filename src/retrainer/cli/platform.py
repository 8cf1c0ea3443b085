"""Run the platform: start, stop and inspect its services, the real Airflow and MLflow CLIs, copy models between profiles."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from retrainer.cli.common import PASSTHROUGH, _login, _settings, console, err, fail
from retrainer.config.environment import process_environment
from retrainer.config.resources import redact_url
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
        env = services.mlflow_server_env(settings)  # its store's URL: never on the command line
        argv = services.mlflow_server_argv(settings)
    except RetrainerError as exc:
        fail(str(exc))
    os.execvpe(argv[0], argv, env)


@app.command()
def down() -> None:
    """Stop everything `retrainer up` started for this state folder (under either profile)."""
    from retrainer.platform import services

    try:
        services.stop(_settings(), say=console.print)
    except RetrainerError as exc:
        fail(str(exc))


@app.command()
def status() -> None:
    """Show which services run and answer."""
    from retrainer.platform import services

    settings = _settings()
    try:
        rows = services.status(settings)
    except RetrainerError as exc:
        fail(str(exc))
    table = Table("service", "state", "detail")
    for name, state, detail in rows:
        color = {"running": "green", "stopped": "dim", "unhealthy": "red"}[state]
        table.add_row(name, f"[{color}]{state}[/]", detail)
    console.print(table)
    console.print(
        f"state folder {settings.home}; Airflow {settings.airflow_ui_url}; MLflow {settings.mlflow_ui_url}"
    )


@app.command()
def env() -> None:
    """Print shell exports pointing Airflow and MLflow at the state folder: eval "$(retrainer env)".
    Secrets are not printed: a password variable is named only, a URL holding a password is
    shown masked in a comment (exporting the mask would break it)."""
    import shlex

    try:
        variables = process_environment(_settings())
    except RetrainerError as exc:
        fail(str(exc))
    for key, value in variables.items():
        if key.endswith(("PASSWORD", "SECRET", "SECRET_KEY", "TOKEN")):
            # Secrets stay where they came from (the environment, a secret store).
            print(f"# {key} is set; not printed")
        elif (masked := redact_url(value)) != value:
            print(
                f"# {key}={masked} (holds a password; not printed: `retrainer airflow ...` and "
                "`retrainer mlflow ...` run with it set)"
            )
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
    try:
        target = settings.tracking_uri
        local = None if target.startswith(("http://", "https://")) else settings.artifact_root
        # Shown without the passwords either URL may hold (copy_models tags the copies so too).
        with console.status(f"copying from {redact_url(source)} to {redact_url(target)}..."):
            copied = copy_models(
                source, mlflow_client(settings), model or None, artifact_root=local
            )
    except RetrainerError as exc:
        fail(str(exc))
    table = Table("model", "source version", "target version", "")
    for c in copied:
        table.add_row(
            c.name, c.source_version, c.target_version, "already copied" if c.skipped else "copied"
        )
    console.print(table)
