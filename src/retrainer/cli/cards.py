"""A version explains and rebuilds itself: `retrainer card`, `retrainer reproduce`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from retrainer.cli.common import _settings, console, fail
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
        out.write_text(text)
        console.print(f"wrote {out}", highlight=False)
    else:
        print(text)
