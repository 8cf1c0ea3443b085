"""Specs, data and registered versions: validate, specs check, models, history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrainer.cli.common import _settings, console, err, fail, plain
from retrainer.errors import RetrainerError, SpecError

app = typer.Typer()
specs = typer.Typer(help="Model specs: check them.", no_args_is_help=True)
app.add_typer(specs, name="specs")


@app.command()
def validate(
    spec: Annotated[str, typer.Argument(help="model name or path to its YAML spec")],
    data: Annotated[str | None, typer.Option("--data", help="file, folder or s3:// prefix")] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="also write the HTML report here")
    ] = None,
) -> None:
    """Validate a data batch against a spec's expectations; exit 1 listing every failure."""
    from retrainer.spec import find_spec
    from retrainer.stores.storage import resolve_source

    settings = _settings()
    if html is not None and (html.is_dir() or not html.parent.is_dir()):
        fail(
            f"--html {html}: "
            + ("is a folder" if html.is_dir() else f"its folder {html.parent} does not exist")
            + "; give the path of the HTML file to write"
        )
    try:
        model = find_spec(settings.models_dir, spec)
        source = data or resolve_source(model.data.train, settings)
        with console.status(f"reading {source}..."):
            from retrainer.stores import storage

            df = storage.read_table(source)
        with console.status(f"running {model.name}'s expectation suite (Great Expectations)..."):
            from retrainer.core.validation import validate_frame

            report = validate_frame(df, model, source)
    except RetrainerError as exc:
        fail(str(exc))
        return
    if html:
        try:
            html.write_text(report.to_html(f"{model.name}: validation of {source}"))
        except OSError as exc:
            err.print(
                f"could not write the HTML report to {plain(html)}: {plain(exc.strerror or exc)}"
            )
    table = Table("", "column", "expectation", "observed", title=plain(f"{model.name}: {source}"))
    for r in sorted(report.results, key=lambda r: r.success):
        table.add_row(
            "[green]ok[/]" if r.success else "[red]FAIL[/]",
            plain(r.column or "(table)"),
            plain(r.description),
            plain(r.observed),
        )
    console.print(table)
    if not report.success:
        err.print(report.summary(), highlight=False, markup=False)
        raise typer.Exit(1)
    console.print(
        f"[green]passed[/]: {len(report.results)} expectations on {report.row_count} rows"
    )


@specs.command("check")
def specs_check() -> None:
    """Validate every spec in the models folder; exit 1 if any is broken."""
    from retrainer.core.training import check_estimator
    from retrainer.errors import SpecError
    from retrainer.spec import iter_specs

    settings = _settings()
    broken = 0
    found = 0
    for path, spec in iter_specs(settings.models_dir):
        found += 1
        if not isinstance(spec, Exception):
            try:  # imports the estimator class and checks its API; never calls it
                check_estimator(spec)
            except SpecError as exc:
                spec = SpecError(f"{path}: {exc}")
        if isinstance(spec, Exception):
            broken += 1
            err.print(f"[red]BROKEN[/] {plain(spec)}", highlight=False)
        else:
            console.print(
                f"[green]ok[/]     {plain(path)}  ->  {spec.retrain_dag_id}", highlight=False
            )
    if not found:
        fail(f"no model specs (*.yaml) in {settings.models_dir}; set RETRAINER_MODELS_DIR")
    if broken:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """Registered models, their versions and aliases."""
    from retrainer.spec import iter_specs
    from retrainer.steps.cost import champion_cost, recent_retrains
    from retrainer.stores.summaries import model_versions

    settings = _settings()
    table = Table("model", "version", "aliases", "gate", "primary metric", "DAG run")
    costs = Table("model", "champion", "its training cost", "retrains, last 30 days", title="Cost")
    for _, spec in iter_specs(settings.models_dir):
        if isinstance(spec, Exception):
            continue
        versions = model_versions(spec.name, settings)
        for v in versions:
            table.add_row(  # values from MLflow tags: shown as written, never as markup
                spec.name,
                plain(v["version"]),
                plain(", ".join(v["aliases"])),
                plain(v["gate"]),
                plain(v["metric"]),
                plain(v["dag_run_id"] or ""),
            )
        if versions:
            version, spent = champion_cost(spec, settings)
            costs.add_row(
                spec.name,
                f"v{version}" if version else "-",
                spent.short() if spent else "not recorded",
                recent_retrains(spec, 30, settings).short(),
            )
    console.print(table)
    if costs.row_count:
        console.print(costs)


@app.command()
def history(model: Annotated[str, typer.Argument(help="model name")]) -> None:
    """The promotion ledger of MODEL: every promotion and rollback, newest first."""
    from datetime import UTC, datetime

    from retrainer.spec import find_spec
    from retrainer.stores.ledger import history as read_history
    from retrainer.stores.tracking import mlflow_client

    settings = _settings()
    try:  # a mistyped name is said, not an empty ledger; a spec's name is safe in a filter
        model = find_spec(settings.models_dir, model).name
    except SpecError as exc:
        fail(str(exc))
    entries = read_history(mlflow_client(settings), model)
    if not entries:
        console.print(f"no promotions recorded for {plain(model)}")
        return
    table = Table(
        "when (UTC)", "action", "from", "to", "triggered by", "reason", "metrics", "DAG run"
    )
    for e in entries:
        when = datetime.fromtimestamp(e.time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        metrics = ", ".join(f"{k}={v}" for k, v in sorted(e.metrics.items())[:2])
        table.add_row(
            when,
            plain(e.action),
            plain(e.from_version or "-"),
            plain(e.to_version),
            plain(e.triggered_by),
            plain(e.reason[:60]),
            plain(metrics),
            plain(e.dag_run_id),
        )
    console.print(table)
