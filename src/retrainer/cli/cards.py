"""A version explains and rebuilds itself: `retrainer card`, `retrainer reproduce`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from retrainer.cli.common import _settings, console, fail, plain
from retrainer.errors import RetrainerError

app = typer.Typer()
REF_HELP = "MODEL (its champion), MODEL@alias or MODEL/version"


@app.command()
def card(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    fmt: Annotated[
        Literal["md", "json", "hf", "html"],
        typer.Option(
            "--format",
            "-f",
            help="md: Markdown; json: Model Card Toolkit JSON (schema v0.0.2, validated); "
            "hf: a Hugging Face README (YAML metadata with model-index, then the Markdown); "
            "html: a page to read or render",
        ),
    ] = "md",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write here, not stdout")] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="also rewrite the version's description and card/")
    ] = False,
) -> None:
    """The model card of a version: intended use, data, training, evaluation, cost, rollout."""
    from retrainer.spec import find_spec
    from retrainer.steps.card import build_card, publish_card, resolve_version
    from retrainer.stores.tracking import mlflow_client

    settings = _settings()
    try:
        name, version = resolve_version(mlflow_client(settings), ref)
        spec = find_spec(settings.models_dir, name)
        built = (publish_card if publish else build_card)(spec, version, settings)
    except RetrainerError as exc:
        fail(str(exc))
        return
    if fmt == "json":
        text = json.dumps(built["mct"], indent=2)
    elif fmt == "hf":
        text = built["hf"] + "\n" + built["markdown"]
    elif fmt == "html":
        from retrainer.core.card import to_html

        text = to_html(built["markdown"], f"{name} v{version}")
    else:
        text = built["markdown"]
    if out:
        try:
            out.write_text(text)
        except OSError as exc:
            fail(
                f"--out {out}: cannot write ({exc.strerror or exc}); give a path in a folder that exists"
            )
        console.print(f"wrote {plain(out)}", highlight=False)
    else:
        print(text)


@app.command()
def reproduce(
    ref: Annotated[str, typer.Argument(help=REF_HELP)],
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    """Rebuild a version from its spec, data snapshot and seeds (outside the registry) and compare
    its predictions on the held-back rows. Exit 0 identical, 1 differs, 2 cannot rebuild."""
    from retrainer.steps.reproduce import DIFFERS, IDENTICAL
    from retrainer.steps.reproduce import reproduce as rebuild

    try:
        with console.status(f"rebuilding {ref}..."):
            result = rebuild(ref, _settings())
    except RetrainerError as exc:
        fail(str(exc), 2)
    except Exception as exc:  # MLflow down, a fit that fails: cannot rebuild (2), not "differs"
        fail(f"{ref}: cannot rebuild ({type(exc).__name__}: {exc})"[:600], 2)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        colour = {IDENTICAL: "green", DIFFERS: "yellow"}.get(result.status, "red")
        lines = result.lines()
        console.print(f"[{colour}]{plain(lines[0])}[/]", highlight=False)
        for line in lines[1:]:
            console.print(line, highlight=False, markup=False)
    if not result.identical:
        raise typer.Exit(1 if result.status == DIFFERS else 2)


@app.command()
def snapshots(
    model: Annotated[str, typer.Argument(help="model name")],
    prune: Annotated[
        bool, typer.Option("--prune", help="delete the snapshots the retention rule lets go")
    ] = False,
) -> None:
    """The data snapshots of MODEL's retrain runs and the retention rule's verdict on each:
    kept while their version is registered, else RETRAINER_SNAPSHOT_DAYS days."""
    from rich.table import Table

    from retrainer.spec import find_spec
    from retrainer.steps.snapshots import prune as apply

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        fates = apply(spec, settings, dry_run=not prune)
    except RetrainerError as exc:
        fail(str(exc))
        return
    table = Table("snapshot", "verdict", "why", title=f"{model}: data snapshots")
    for f in fates:
        verdict = "keep" if f.keep else ("deleted" if prune else "would delete")
        table.add_row(plain(f.uri), verdict, plain(f.why))
    console.print(table)
