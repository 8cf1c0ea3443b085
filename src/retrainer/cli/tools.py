"""Serve models, compare two tables for drift, replay traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrainer.cli.common import _settings, console, err, fail, plain
from retrainer.errors import RetrainerError

app = typer.Typer()


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
    from retrainer.serving.options import ServingOptions
    from retrainer.serving.protocol import with_head_deadline

    settings = _settings()
    try:
        options = ServingOptions.from_env(settings)
    except ValueError as exc:
        fail(str(exc))
        return
    application = create_app(settings, default_model=model, max_rows=max_rows, options=options)
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.serving_port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=with_head_deadline(options.head_seconds),  # httptools, with a deadline for heads
        timeout_graceful_shutdown=10,
    )


@app.command()
def drift(
    reference: Annotated[
        Path, typer.Option("--reference", "-r", help="csv or parquet: the reference")
    ],
    current: Annotated[
        Path, typer.Option("--current", "-c", help="csv or parquet: the current data")
    ],
    bins: Annotated[
        int, typer.Option(min=2, max=100, help="quantile bins per numeric feature (2-100)")
    ] = 10,
    method: Annotated[str, typer.Option(help="quantile | evidently")] = "quantile",
    spec_name: Annotated[
        str | None,
        typer.Option("--spec", help="take features and PSI limits from this model's spec"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """PSI per feature between two tables, and the verdict (ok / warn / retrain)."""
    import json
    import math

    from retrainer.core.drift import compare_tables, verdict
    from retrainer.stores import storage

    if method not in ("quantile", "evidently"):
        fail(f"--method: expected quantile or evidently; found {method!r}")
    warn, limit = 0.1, 0.25
    numeric = categorical = None
    try:
        # a local Parquet file is read column by column: two large files are never both in memory
        ref = storage.read_columns(str(reference))
        cur = storage.read_columns(str(current))
        if spec_name:
            from retrainer.core.validation import feature_columns
            from retrainer.spec import find_spec

            spec = find_spec(_settings().models_dir, spec_name)
            numeric, categorical = feature_columns(spec, ref)
            warn, limit = spec.monitoring.psi_warn, spec.monitoring.psi_retrain
            bins = spec.monitoring.psi_bins
        result = compare_tables(ref, cur, numeric, categorical, bins=bins, method=method)  # type: ignore[arg-type]
    except (RetrainerError, ValueError) as exc:
        fail(str(exc))
        return
    rows = {
        name: {
            "psi": f.to_dict()["psi"],
            "kind": f.kind,
            "verdict": "schema_changed" if f.problem else verdict(f.psi, warn, limit),
            "problem": f.problem or None,
            "null_share_reference": f.null_share_reference,
            "null_share_current": f.null_share_current,
            **({"unseen": f.unseen} if f.unseen else {}),
        }
        for name, f in result.features.items()
    }
    worst = max((v for v in result.psi.values() if not math.isnan(v)), default=float("nan"))
    overall = "schema_changed" if result.problems else verdict(worst, warn, limit)
    reasons: list[str] = []
    if spec_name and method == "quantile":
        # The monitor's own decision on these two tables: PSI AND significance, exclusions.
        from retrainer.core.significance import drift_significance
        from retrainer.steps.monitor.decision import decide

        decision = decide(spec, result, result.rows_current)
        overall, reasons = decision.decision, decision.reasons
        mon = spec.monitoring
        sig = decision.significance  # made by the monitor's rule when a PSI passed the limit
        if sig is None and result.rows_current >= mon.min_rows:  # else: shown all the same
            sig = drift_significance(result, limit, mon.fdr, mon.exclude).to_dict()
        for name, f in (sig or {}).get("features", {}).items():
            rows[name] |= {
                "noise_floor": f["noise_floor"],
                "p_value": f["test"]["p_value"] if f["test"] else None,
                "p_adjusted": f["p_adjusted"],
                "test": f["test"]["method"] if f["test"] else None,
                "in_trigger": f["in_trigger"],
            }
            if rows[name]["verdict"] == "retrain" and not f["drifted"]:
                rows[name]["verdict"] = "warn" if f["in_trigger"] else "excluded"
    if as_json:
        print(
            json.dumps(
                {
                    "method": method,
                    "bins": bins if method == "quantile" else "sturges",
                    "rows_reference": result.rows_reference,
                    "rows_current": result.rows_current,
                    "psi_warn": warn,
                    "psi_retrain": limit,
                    "verdict": overall,
                    "reasons": reasons,
                    "max_psi": None if math.isnan(worst) else worst,
                    "features": rows,
                },
                indent=2,
            )
        )
    else:
        significance = any("p_adjusted" in r for r in rows.values())
        extra = ("noise floor", "p (BH)", "test") if significance else ()
        table = Table(
            "feature",
            "kind",
            "PSI",
            *extra,
            "verdict",
            "nulls ref → cur",
            title=f"PSI ({method})",
        )
        color = {"ok": "green", "warn": "yellow", "retrain": "red", "schema_changed": "red"}

        def num(v: float | None, fmt: str) -> str:
            return "n/a" if v is None else format(v, fmt)

        for name, r in sorted(rows.items(), key=lambda kv: -(kv[1]["psi"] or 0)):
            v = r["verdict"]
            cells = (
                (
                    num(r.get("noise_floor"), ".4f"),
                    num(r.get("p_adjusted"), ".2g"),
                    r.get("test") or "-",
                )
                if significance
                else ()
            )
            table.add_row(
                plain(name),
                r["kind"],
                num(r["psi"], ".4f"),
                *cells,
                f"[{color.get(v, 'dim')}]{v}[/]"
                + (f" ({plain(r['problem'])})" if r["problem"] else ""),
                f"{r['null_share_reference']:.1%} → {r['null_share_current']:.1%}",
            )
        console.print(table)
        rule = (
            f"retrain >= {limit:g} and BH-adjusted p <= {spec.monitoring.fdr:g}"
            if significance
            else f"retrain >= {limit:g}"
        )
        console.print(
            f"{result.rows_reference} reference rows, {result.rows_current} current rows; "
            f"warn >= {warn:g}, {rule}: [bold]{overall}[/]"
        )
        if result.problems:
            console.print(
                "schema changed: "
                + "; ".join(f"{plain(k)} ({plain(v)})" for k, v in sorted(result.problems.items())),
                highlight=False,
            )
        for reason in reasons:
            console.print(f"  - {plain(reason)}")
    if overall in ("retrain", "schema_changed"):
        raise typer.Exit(3)


@app.command()
def simulate(
    model: Annotated[str, typer.Argument(help="model name")],
    data: Annotated[Path, typer.Option("--data", help="csv or parquet rows to replay")],
    rate: Annotated[
        float | None, typer.Option(help="rows per second (default: as fast as it answers)")
    ] = None,
    labels: Annotated[
        bool, typer.Option("--labels", help="also send each row's label as feedback")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="replay at most this many rows")] = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="rows per request")] = 50,
) -> None:
    """Replay real rows to the serving API (and optionally their labels as delayed feedback)."""
    from retrainer.platform.simulate import replay_to
    from retrainer.spec import find_spec
    from retrainer.stores import storage

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        df = storage.read_table(str(data))
        if limit is not None:
            df = df.head(limit)
        with console.status(f"replaying {len(df)} rows to {settings.serving_url}..."):
            result = replay_to(spec, df, labels=labels, rate=rate, batch=batch)
    except RetrainerError as exc:
        fail(str(exc))
        return
    versions = ", ".join(f"v{v}: {n}" for v, n in result.versions.items()) or "none"
    console.print(
        f"{result.rows} rows answered in {result.requests} requests ({result.seconds:.1f} s; "
        f"served by {versions}), {result.failed} failed, {result.labelled} labels sent"
    )
    for e in result.errors[:5]:
        err.print(f"  {plain(e)}", highlight=False)
    if result.failed:
        raise typer.Exit(1)
