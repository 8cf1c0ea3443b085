"""The whole loop on credit_default, end to end, with a table of what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from retrainer.cli.common import (
    _client,
    _follow_deploy,
    _login,
    _print_check,
    _report_run,
    _settings,
    console,
    fail,
    state_printer,
    trigger_and_wait,
)
from retrainer.errors import RetrainerError

app = typer.Typer()
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
