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

from retrainer.config.settings import Settings, get_settings
from retrainer.errors import RetrainerError

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


def _login(settings: Settings) -> str:
    """The Airflow login to show: a configured password is never printed."""
    user, password = settings.airflow_credentials()
    if settings.airflow_admin_password:
        return f"{user} / the password in RETRAINER_AIRFLOW_ADMIN_PASSWORD"
    return f"{user} / {password}"


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
    console.print(f"\nAirflow UI  {settings.airflow_url}  (login {_login(settings)})")
    console.print(f"MLflow UI   {settings.mlflow_url}")
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
        f"state folder {settings.home}; Airflow {settings.airflow_url}; MLflow {settings.mlflow_url}"
    )


@app.command()
def env() -> None:
    """Print shell exports pointing Airflow and MLflow at the state folder: eval "$(retrainer env)"."""
    import shlex

    for key, value in _settings().environment().items():
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
    from retrainer.spec import find_spec
    from retrainer.stores.storage import resolve_source

    settings = _settings()
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
    from retrainer.platform.airflow_api import AirflowClient

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
    from retrainer.stores.summaries import retrain_outcome

    settings = _settings()
    outcome = retrain_outcome(name, dag_id, run["dag_run_id"], settings)
    state = run.get("state")
    console.print(
        f"\n[bold]{dag_id}[/] finished: [{'green' if state == 'success' else 'red'}]{state}[/]"
    )
    for line in outcome.lines():
        console.print(line, highlight=False)
    console.print(f"\nAirflow UI  {settings.airflow_url}/dags/{dag_id}  (login {_login(settings)})")
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

    from retrainer.stores.ledger import history as read_history
    from retrainer.stores.tracking import mlflow_client

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
    from retrainer.spec import find_spec
    from retrainer.stores.registry import version_by_alias
    from retrainer.stores.tracking import mlflow_client

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


@app.command()
def drift(
    reference: Annotated[
        Path, typer.Option("--reference", "-r", help="csv or parquet: the reference")
    ],
    current: Annotated[
        Path, typer.Option("--current", "-c", help="csv or parquet: the current data")
    ],
    bins: Annotated[int, typer.Option(help="quantile bins per numeric feature")] = 10,
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

    from retrainer.core.drift import compare_frames, verdict
    from retrainer.stores import storage

    if method not in ("quantile", "evidently"):
        fail(f"--method: expected quantile or evidently; found {method!r}")
    warn, limit = 0.1, 0.25
    numeric = categorical = None
    try:
        ref = storage.read_table(str(reference))
        cur = storage.read_table(str(current))
        if spec_name:
            from retrainer.core.validation import feature_columns
            from retrainer.spec import find_spec

            spec = find_spec(_settings().models_dir, spec_name)
            numeric, categorical = feature_columns(spec, ref)
            warn, limit = spec.monitoring.psi_warn, spec.monitoring.psi_retrain
            bins = spec.monitoring.psi_bins
        result = compare_frames(ref, cur, numeric, categorical, bins=bins, method=method)  # type: ignore[arg-type]
    except RetrainerError as exc:
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
                    "max_psi": None if math.isnan(worst) else worst,
                    "features": rows,
                },
                indent=2,
            )
        )
    else:
        table = Table(
            "feature", "kind", "PSI", "verdict", "nulls ref → cur", title=f"PSI ({method})"
        )
        color = {"ok": "green", "warn": "yellow", "retrain": "red", "schema_changed": "red"}
        for name, r in sorted(rows.items(), key=lambda kv: -(kv[1]["psi"] or 0)):
            v = r["verdict"]
            table.add_row(
                name,
                r["kind"],
                "n/a" if r["psi"] is None else f"{r['psi']:.4f}",
                f"[{color.get(v, 'dim')}]{v}[/]" + (f" ({r['problem']})" if r["problem"] else ""),
                f"{r['null_share_reference']:.1%} → {r['null_share_current']:.1%}",
            )
        console.print(table)
        console.print(
            f"{result.rows_reference} reference rows, {result.rows_current} current rows; "
            f"warn >= {warn:g}, retrain >= {limit:g}: [bold]{overall}[/]"
        )
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
    limit: Annotated[int | None, typer.Option(help="replay at most this many rows")] = None,
    batch: Annotated[int, typer.Option(help="rows per request")] = 50,
) -> None:
    """Replay real rows to the serving API (and optionally their labels as delayed feedback)."""
    from retrainer.platform.simulate import replay_to
    from retrainer.spec import find_spec
    from retrainer.stores import storage

    settings = _settings()
    try:
        spec = find_spec(settings.models_dir, model)
        df = storage.read_table(str(data))
        if limit:
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
        err.print(f"  {e}", highlight=False)
    if result.failed:
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
        f"  decision [bold]{d['decision']}[/]: {'; '.join(d['reasons'])}", highlight=False
    )
    top = sorted(((v, k) for k, v in d["psi"].items() if v is not None), reverse=True)[:5]
    console.print("  top PSI: " + ", ".join(f"{k} {v:.3f}" for v, k in top), highlight=False)
    labels = d.get("labels") or {}
    if labels.get("value") is not None:
        console.print(
            f"  delayed labels: {labels['metric']} {labels['value']:.3f} on {labels['rows']} rows",
            highlight=False,
        )
    if check["action"]:
        console.print(f"  action: {check['action']} {check['action_detail']}", highlight=False)
    console.print(
        f"  MLflow: {settings.mlflow_url}/#/experiments/{check['experiment_id']}/runs/{check['mlflow_run_id']}"
    )
    return check


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


DEMO_MODEL = "credit_default"


@app.command()
def demo() -> None:
    """The whole loop on credit_default through the real scheduler, with a summary table.

    v1 trained on the base population and deployed; base traffic (monitor: ok); shifted traffic
    whose labelled batch lands in the training folder (monitor: retrain); v2 trained, gated
    against v1, deployed and served. See examples/credit/README.md for the populations.
    """
    import shutil
    import time

    from retrainer.spec import find_spec
    from retrainer.stores.storage import resolve_source

    settings = _settings()
    started = time.monotonic()
    spec = find_spec(settings.models_dir, DEMO_MODEL)
    batches = Path(resolve_source(spec.data.train, settings))
    traffic = settings.models_dir.parent / "examples" / "credit" / "traffic"
    for old in sorted(batches.glob("landed-*")):
        console.print(
            f"removing {old} (landed by an earlier demo) so v1 learns the base population only"
        )
        old.unlink()
    steps: list[tuple[str, str, str]] = []

    def serving() -> str:
        import httpx

        try:
            return str(
                httpx.get(f"{settings.serving_url}/models/{spec.name}", timeout=10)
                .json()
                .get("version")
            )
        except Exception:
            return "?"

    def retrain_and_deploy(label: str, run: dict[str, Any]) -> bool:
        _report_run(spec.name, spec.retrain_dag_id, run, exit_on_failure=False)
        from retrainer.stores.summaries import retrain_outcome

        outcome = retrain_outcome(spec.name, spec.retrain_dag_id, run["dag_run_id"], settings)
        gate = (outcome.gate or {}).get("decision", run.get("state", "?"))
        metric = spec.gate.primary_metric
        value = (outcome.gate or {}).get("candidate_metrics", {}).get(metric)
        detail = f"gate {gate}" + (f", {metric} {value:.3f}" if value is not None else "")
        steps.append(
            (label, detail + (f" → v{outcome.version}" if outcome.version else ""), serving())
        )
        deployed = _follow_deploy(
            spec.name, spec.retrain_dag_id, run["dag_run_id"], spec.deploy_dag_id
        )
        if deployed is not None:
            steps.append((f"deploy ({spec.deploy_dag_id})", deployed, serving()))
        return run.get("state") == "success" and deployed in (None, "success")

    def replay_and_check(label: str, path: Path) -> dict[str, Any] | None:
        from retrainer.platform.simulate import replay_to
        from retrainer.stores import storage

        df = storage.read_table(str(path))
        with console.status(f"replaying {len(df)} rows of {path.name} with labels..."):
            result = replay_to(spec, df, labels=True)
        console.print(f"\n{label}: {result.rows} rows served, {result.labelled} labels sent")
        # The demo compresses days into minutes: its checks ignore the cooldown.
        run = trigger_and_wait(spec.monitor_dag_id, {"ignore_cooldown": True})
        check = _print_check(spec, run)
        d = (check or {}).get("decision") or {}
        top = max(((v, k) for k, v in d.get("psi", {}).items() if v is not None), default=None)
        detail = d.get("decision", run.get("state", "?"))
        if top:
            detail += f" (max PSI {top[1]} {top[0]:.2f})"
        steps.append((f"monitor: {label}", detail, serving()))
        return check

    try:
        ok = retrain_and_deploy(
            "retrain on the base population",
            trigger_and_wait(spec.retrain_dag_id, {"reason": "make demo: base population"}),
        )
        if ok:
            replay_and_check("base traffic", traffic / "base.csv")
            landed = batches / "landed-shifted.csv"
            shutil.copyfile(traffic / "shifted.csv", landed)
            console.print(f"\nlanded the shifted population's labelled batch: {landed}")
            check = replay_and_check("shifted traffic", traffic / "shifted.csv")
            if check and check.get("retrain_run_id"):
                client = _client()
                console.print(
                    f"\nfollowing {spec.retrain_dag_id} run {check['retrain_run_id']} (triggered by drift)"
                )
                with console.status("retraining..."):
                    run = client.wait_for_run(
                        spec.retrain_dag_id,
                        check["retrain_run_id"],
                        timeout=900,
                        on_change=state_printer(),
                    )
                ok = retrain_and_deploy("retrain triggered by drift", run)
            else:
                ok = False
    except RetrainerError as exc:
        fail(str(exc))
        return

    table = Table(
        "step",
        "outcome",
        "serving",
        title=f"{spec.name}: the loop in {time.monotonic() - started:.0f} s",
    )
    for step, outcome, version in steps:
        table.add_row(step, outcome, "none" if version in ("None", "?") else f"v{version}")
    console.print()
    console.print(table)
    console.print(
        f"Airflow UI  {settings.airflow_url}/dags/{spec.monitor_dag_id}  (login {_login(settings)})"
    )
    console.print(
        f"MLflow UI   {settings.mlflow_url}/#/models/{spec.name}  (drift over time: experiment {spec.experiment_name}/monitor)"
    )
    console.print(
        f"Serving API {settings.serving_url}/docs    ledger: retrainer history {spec.name}"
    )
    if not ok:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """Registered models, their versions and aliases."""
    from retrainer.spec import iter_specs
    from retrainer.stores.summaries import model_versions

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
