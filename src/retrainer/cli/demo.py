"""The whole loop on credit_default, end to end, with a table of what happened."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
    plain,
    state_printer,
    trigger_and_wait,
)
from retrainer.errors import RetrainerError

app = typer.Typer()
DEMO_MODEL = "credit_default"


@contextmanager
def live_traffic(spec: Any, path: Path, enabled: bool) -> Iterator[None]:
    """Replay `path`'s rows to serving in a loop while the block runs (a shadow needs mirrored
    rows, a canary requests to judge). Not for a first deployment: there is no rollout then, and
    the rows would land in the monitor's next window."""
    import threading

    from retrainer.platform.simulate import replay_to
    from retrainer.stores import storage

    if spec.deployment.rollout.strategy == "direct" or not enabled:
        yield
        return
    rows = storage.read_table(str(path)).drop(columns=[spec.data.target], errors="ignore")
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            try:
                replay_to(spec, rows.sample(100, random_state=len(rows)), rate=200, batch=5)
            except Exception:  # no champion yet, or serving reloading: try again
                stop.wait(1)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)


def rollout_steps(model: str, since: float, settings: Any) -> list[tuple[str, str]]:
    """The rollout's ledger entries since `since` as demo table rows, oldest first."""
    from retrainer.stores.ledger import history
    from retrainer.stores.tracking import mlflow_client

    out = []
    for e in reversed(history(mlflow_client(settings), model, limit=20)):
        if e.time < since * 1000 or e.action in ("promote", "initial"):
            continue
        detail = e.reason[:90]
        if e.action.startswith("shadow") and "agreement" in e.metrics:
            detail = f"agreement {float(e.metrics['agreement']):.1%}; " + detail
        out.append((f"rollout: {e.action} v{e.to_version}", detail))
    return out


def not_answering(settings: Any) -> str | None:
    """Which service the demo needs does not answer, or None (asked once, in seconds: MLflow's
    client would retry a refused connection for minutes and end in a traceback)."""
    from retrainer.platform import services

    needed = {"Airflow": f"{settings.airflow_url}{services.AIRFLOW_HEALTH}"}
    uri = settings.resources.service_tracking_uri
    if uri.startswith(("http://", "https://")):
        needed["MLflow"] = f"{uri.rstrip('/')}/health"
    for name, url in needed.items():
        if not services.healthy(url, timeout=5):
            return f"{name} does not answer at {url}"
    return None


def hold_demo_lock(settings: Any) -> Any | None:
    """An exclusive lock for this demo's whole run (keep the value while it runs), or None when
    another demo holds it. The lock file sits beside the state folder, not in it: a rerun moves
    the folder aside mid-run."""
    import fcntl

    path = settings.home.with_name(f"{settings.home.name}.demo.lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError:  # nowhere to put it (a read-only parent): run unguarded, as before
        return path
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def earlier_versions(settings: Any, model: str) -> list[int]:
    """The registered versions of ``model`` in this profile's registry, oldest first.

    Asked through the MLflow server the services use, not the embedded profile's SQLite file:
    MLflow keeps one store per URI for the life of the process, and a store opened on the file
    now would go on reading it after `start_afresh` moved it aside (the rest of the demo would
    see the earlier demo's runs)."""
    from mlflow.tracking import MlflowClient

    uri = settings.resources.service_tracking_uri
    try:
        found = MlflowClient(uri, uri).search_model_versions(f"name = '{model}'")
    except Exception as exc:  # refused, unauthorised, a store that is not MLflow's
        raise RetrainerError(
            f"cannot read {model}'s versions from the registry at {uri}: {str(exc)[:300]}"
        ) from exc
    return sorted(int(mv.version) for mv in found)


def start_afresh(settings: Any, model: str) -> None:
    """The demo's story starts from an empty registry (v1 is the base population's model, the
    shifted traffic is new to it). When an earlier demo left ``model`` registered, a rerun would
    gate the base population's model against the earlier v2 and see the base traffic as drift
    from it: in the embedded profile the earlier state is set aside, whole, and the platform
    started again from empty; elsewhere the demo stops before changing anything."""
    from retrainer.platform import services

    versions = earlier_versions(settings, model)
    if not versions:
        return
    have = f"v{versions[0]}" + (f"-v{versions[-1]}" if len(versions) > 1 else "")
    elsewhere = services.state_outside_home(settings)
    if elsewhere:
        raise RetrainerError(
            f"{model} already has {have} in this profile's registry (an earlier demo?). The demo "
            f"tells its story from an empty registry and has changed nothing: {elsewhere}, so it "
            "cannot be set aside here. Run it against a fresh profile (the compose stack: "
            "`docker-compose down -v`, then up again)"
        )
    console.print(
        f"{model} already has {have} here (an earlier demo); the demo's story starts from an "
        "empty platform, so this one is set aside, whole (nothing is deleted), and the platform "
        "starts again"
    )
    with console.status("setting the earlier state aside and starting afresh..."):
        kept = services.set_aside(settings, say=console.print)
        services.start(settings, say=console.print)
    console.print(
        f"the earlier state is kept in {kept} (RETRAINER_HOME={kept} `retrainer up` opens it; "
        "delete the folder when done with it)\n"
    )


@app.command()
def demo() -> None:
    """The whole loop on credit_default through the real scheduler, with a summary table.

    v1 trained on the base population and deployed; base traffic (monitor: ok); shifted traffic
    whose labelled batch lands in the training folder (monitor: retrain); v2 trained, gated
    against v1, deployed and served. See examples/credit/README.md for the populations. Run
    again in the embedded profile, it sets the earlier state folder aside and starts afresh.
    """
    import shutil
    import time

    from retrainer.spec import find_spec
    from retrainer.stores.storage import resolve_source

    settings = _settings()
    spec = find_spec(settings.models_dir, DEMO_MODEL)
    lock = hold_demo_lock(settings)  # until this demo ends
    if lock is None:
        fail(
            f"another `retrainer demo` is running on {settings.home}: wait for it to end (two "
            "demos at once would replay traffic into each other's windows)"
        )
        return
    why = not_answering(settings)
    if why:
        fail(
            f"{why}: the platform is not running. Start it with `retrainer up` (`make demo` does both)"
        )
        return
    try:
        start_afresh(settings, spec.name)
    except RetrainerError as exc:
        fail(str(exc))
        return
    started = time.monotonic()  # the loop's time, without a fresh start's
    batches = Path(resolve_source(spec.data.train, settings))
    traffic = settings.models_dir.parent / "examples" / "credit" / "traffic"
    for old in sorted(batches.glob("landed-*")):
        console.print(
            f"removing {old} (landed by an earlier demo) so v1 learns the base population only"
        )
        old.unlink()
    steps: list[tuple[str, str, str]] = []
    deploy_seconds: list[float] = []

    def serving() -> str:
        """The version serving answers with ("None" before a champion, "?" if unreachable)."""
        import httpx

        from retrainer.config.secrets import api_token

        token = api_token()  # serving behind a token (the production profile, containers)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            resp = httpx.get(
                f"{settings.serving_url}/models/{spec.name}", headers=headers, timeout=10
            )
            return str(resp.json().get("version")) if resp.status_code in (200, 503) else "?"
        except Exception:
            return "?"

    def retrain_and_deploy(label: str, run: dict[str, Any]) -> bool:
        _report_run(spec.name, spec.retrain_dag_id, run, exit_on_failure=False)
        from retrainer.stores.summaries import retrain_outcome

        outcome = retrain_outcome(spec.name, spec.retrain_dag_id, run["dag_run_id"], settings)
        detail = gate_outcome(outcome.gate) if outcome.gate else f"gate {run.get('state', '?')}"
        steps.append(
            (label, detail + (f" → v{outcome.version}" if outcome.version else ""), serving())
        )
        began = time.time()
        served = serving() not in ("None", "?")
        with live_traffic(
            spec, traffic / "shifted.csv", served
        ):  # a rollout needs requests to watch
            deployed = _follow_deploy(
                spec.name, spec.retrain_dag_id, run["dag_run_id"], spec.deploy_dag_id
            )
        took = time.time() - began
        for step, detail in rollout_steps(spec.name, began, settings):
            steps.append((step, detail, serving()))
        if deployed is not None:
            steps.append((f"deploy ({spec.deploy_dag_id}, {took:.0f} s)", deployed, serving()))
            deploy_seconds.append(took)
        return run.get("state") == "success" and deployed in (None, "success")

    def replay_and_check(label: str, path: Path) -> dict[str, Any] | None:
        from retrainer.platform.simulate import replay_to
        from retrainer.steps.monitor.window import settle_seconds
        from retrainer.stores import storage

        df = storage.read_table(str(path))
        with console.status(f"replaying {len(df)} rows of {path.name} with labels..."):
            result = replay_to(spec, df, labels=True)
        console.print(f"\n{label}: {result.rows} rows served, {result.labelled} labels sent")
        settle = settle_seconds(settings)
        if settle:  # the check right after the traffic: let its rows be inside the window
            with console.status(f"waiting {settle} s: a window ends {settle} s before its check"):
                time.sleep(settle)
        # The demo compresses days into minutes: its checks ignore the cooldown.
        run = trigger_and_wait(spec.monitor_dag_id, {"ignore_cooldown": True})
        check = _print_check(spec, run)
        d = (check or {}).get("decision") or {}
        detail = monitor_outcome(d) if d else str(run.get("state", "?"))
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
        table.add_row(
            plain(step), plain(outcome), "none" if version in ("None", "?") else f"v{version}"
        )
    console.print()
    console.print(table)
    if len(deploy_seconds) == 2 and spec.deployment.rollout.strategy != "direct":
        console.print(
            f"the rollout ({spec.deployment.rollout.strategy}) added "
            f"{deploy_seconds[1] - deploy_seconds[0]:.0f} s to the loop (v2's deploy "
            f"{deploy_seconds[1]:.0f} s vs v1's direct first deployment {deploy_seconds[0]:.0f} s)"
        )
    console.print(
        f"Airflow UI  {settings.airflow_ui_url}/dags/{spec.monitor_dag_id}  (login {_login(settings)})"
    )
    console.print(
        f"MLflow UI   {settings.mlflow_ui_url}/#/models/{spec.name}  (drift over time: experiment {spec.experiment_name}/monitor)"
    )
    console.print(
        f"Serving API {settings.serving_url}/docs    ledger: retrainer history {spec.name}"
    )
    if not ok:
        raise typer.Exit(1)


# The table's gate and monitor lines, read from the decision records as logged (nothing here
# re-computes a statistic).

RULE_WORDS = {"superiority": "superiority", "non_inferiority": "non-inferiority"}


def gate_outcome(record: dict[str, Any]) -> str:
    """'gate passed: roc_auc 0.831 vs v1 0.822: +0.008, 95% lower bound -0.004 (delong, 726
    rows), 95% bootstrap interval [...]; non-inferiority (margin 0.01) in force: passes,
    superiority (margin 0): rejects'."""
    metric = record["primary_metric"]
    value = record["candidate_metrics"].get(metric)
    out = f"gate {record['decision']}" + (f": {metric} {value:.3f}" if value is not None else "")
    test = ((record.get("extra") or {}).get("comparison") or {}).get("metrics", {}).get(metric)
    if not test:
        return out + (" (no champion yet)" if not record.get("champion_version") else "")
    lo, hi = test["bootstrap_interval"]
    level = f"{test['confidence']:.0%}"
    out += (
        f" vs v{record['champion_version']} {test['champion']:.3f}: {test['improvement']:+.3f}, "
        f"{level} lower bound {test['lower']:+.3f} ({test['method']}, {test['rows']} rows), "
        f"{level} bootstrap interval [{lo:+.3f}, {hi:+.3f}]"
    )
    rules = test.get("rules") or {test["comparison"]: test}
    verdicts = [
        f"{RULE_WORDS[r]} (margin {o['margin']:g}){' in force' if r == test['comparison'] else ''}"
        f": {'passes' if o['passed'] else 'rejects'}"
        for r, o in rules.items()
    ]
    return out + "; " + ", ".join(verdicts)


def monitor_outcome(d: dict[str, Any]) -> str:
    """'retrain (max PSI Age 6.21, noise floor 0.013, p < 1e-300); estimated roc_auc without
    labels 0.851 (reference 0.846, drop -0.006); delayed labels: ...'."""
    out = str(d["decision"])
    sig = (d.get("significance") or {}).get("features") or {}
    top = max(((v, k) for k, v in d.get("psi", {}).items() if v is not None), default=None)
    if top:
        value, name = top
        f = sig.get(name) or {}
        floor = f" noise floor {f['noise_floor']:.3f}" if f.get("noise_floor") is not None else ""
        p_adj = f.get("p_adjusted")
        p = "" if p_adj is None else f", BH-adjusted p {p_adj:.2g}" if p_adj else ", p < 1e-300"
        out += f" (max PSI {name} {value:.2f}{',' if floor else ''}{floor}{p})"
    e = d.get("estimate")
    if e:
        out += (
            f"; estimated {e['metric']} without labels {e['estimated']:.3f} "
            f"(reference {e['reference']:.3f}, drop {e['drop']:+.3f}"
        )
        sup = e.get("support")
        if sup:
            out += f"; {sup['outside_share']:.0%} of rows outside the reference" + (
                "" if sup["within"] else ": not trusted"
            )
        out += ")"
    labels = d.get("labels") or {}
    if labels.get("value") is not None:
        out += (
            f"; delayed labels: {labels['metric']} {labels['value']:.3f} on {labels['rows']} rows"
        )
    return out
