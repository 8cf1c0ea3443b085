"""Drive the DAGs through Airflow's REST API: trigger a retrain, roll back, run a monitor check."""

from __future__ import annotations

from typing import Annotated

import typer

from retrainer.cli.common import (
    _print_check,
    _report_run,
    _settings,
    console,
    fail,
    trigger_and_wait,
)
from retrainer.errors import RetrainerError

app = typer.Typer()


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
    from mlflow.exceptions import MlflowException

    from retrainer.constants import ALIAS_PREVIOUS
    from retrainer.spec import find_spec
    from retrainer.stores.registry import version_by_alias
    from retrainer.stores.tracking import mlflow_client

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        if version is not None:  # as the registry writes it: "01" or "1_0" would be another name
            if not (version.isascii() and version.isdigit()) or int(version) < 1:
                fail(f"--version: expected a version number such as 3; found {version[:40]!r}")
            version = str(int(version))
            try:
                mlflow_client(settings).get_model_version(spec.name, version)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    fail(
                        f"{spec.name} has no version {version} in the registry: "
                        "`retrainer models` lists them"
                    )
                fail(f"the registry could not be asked about {spec.name} v{version}: {exc}"[:400])
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


@app.command()
def monitor(
    model: Annotated[str, typer.Argument(help="model name")],
    ignore_cooldown: Annotated[bool, typer.Option("--ignore-cooldown")] = False,
) -> None:
    """Run MODEL's monitor DAG now through the scheduler and print its decision."""
    from retrainer.spec import find_spec

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        run = trigger_and_wait(spec.monitor_dag_id, {"ignore_cooldown": ignore_cooldown})
    except RetrainerError as exc:
        fail(str(exc))
        return
    check = _print_check(spec, run)
    if run.get("state") != "success" or check is None:
        raise typer.Exit(1)
