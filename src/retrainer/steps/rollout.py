"""The rollout of a challenger (shadow, then canary, then promotion) as plain functions.

Serving holds the traffic split (its admin API: PUT/GET/DELETE /models/{name}/rollout); this
module drives it, decides with `core.rollout`, writes every step to the promotion ledger, and
keeps the rollout's state and its control (pause / resume / abort) as tags of the registered
model, where both the CLI and the deploy DAG's waiting tasks read them (README: Safe rollout).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import httpx

from retrainer import constants as C
from retrainer.config.secrets import serving_admin_token
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.core.rollout import (
    RolloutDecision,
    RolloutStatus,
    decide_canary,
    decide_shadow,
    shadow_ready,
)
from retrainer.errors import DeployError, ServiceError
from retrainer.spec import ModelSpec
from retrainer.steps.deploy import alias_version, ledger

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
STATE_TAG = "retrainer.rollout.state"
CONTROL_TAG = "retrainer.rollout.control"  # "", "paused" or "abort"
CONTROLS = ("paused", "abort")
SEGMENT_MIN_ROWS = 20


class RolloutStopped(DeployError):
    """The rollout ended without promotion (stopped in shadow, rolled back, aborted); `alert`
    holds what the rollout_stopped alert says (stage, measured, action, the challenger version)
    when one is due."""

    def __init__(self, message: str, alert: tuple[str, list[str], str, str] | None = None) -> None:
        super().__init__(message)
        self.alert = alert


class Superseded(DeployError):
    """on_new_version: replace: a newer challenger ended this rollout; its own deploy run follows."""


def _client(settings: Settings) -> MlflowClient:
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client(settings)


# --- serving's admin API -----------------------------------------------------------------------


def admin(
    name: str, method: str, settings: Settings, body: dict[str, Any] | None = None
) -> RolloutStatus:
    """One call of serving's rollout route; any refusal is a DeployError saying what serving said."""
    url = f"{settings.serving_url}/models/{name}/rollout"
    try:
        resp = httpx.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {serving_admin_token(settings)}"},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        raise ServiceError(
            f"serving at {settings.serving_url} is unreachable ({exc}); is `retrainer serve` running?"
        ) from None
    if resp.status_code != 200:
        raise DeployError(
            f"serving refused {method} {url} {json.dumps(body) if body else ''}: "
            f"{resp.status_code} {resp.text[:500]}"
        )
    return RolloutStatus.from_dict(resp.json())


def _put(spec: ModelSpec, settings: Settings, challenger: str, mode: str, fraction: float) -> None:
    body = {
        "challenger": challenger,
        "mode": mode,
        "fraction": fraction,
        "key": spec.deployment.rollout.key,
    }
    admin(spec.name, "PUT", settings, body)
    log.info("%s: v%s in %s at %.0f%% of traffic", spec.name, challenger, mode, fraction * 100)


# --- state and control, on the registered model ----------------------------------------------


def read_state(client: MlflowClient, name: str) -> tuple[dict[str, Any] | None, str]:
    """The rollout in progress (None) and its control ("", "paused" or "abort")."""
    tags = client.get_registered_model(name).tags or {}
    raw = tags.get(STATE_TAG) or ""
    return (json.loads(raw) if raw else None), tags.get(CONTROL_TAG, "")


def _write_state(client: MlflowClient, name: str, state: dict[str, Any] | None) -> None:
    if state is None:
        client.delete_registered_model_tag(name, STATE_TAG)
    else:
        client.set_registered_model_tag(name, STATE_TAG, json.dumps(state))


def _record(
    client: MlflowClient,
    settings: Settings,
    spec: ModelSpec,
    ctx: RunContext,
    state: dict[str, Any],
    action: str,
    reason: str,
    decision: RolloutDecision | None = None,
) -> str:
    """A ledger entry for the rollout (and the decision on the challenger's model version)."""
    metrics = None
    if decision is not None:
        metrics = {c.name: f"{c.value:.6g}" for c in decision.checks if c.value is not None}
        _log_decision(client, spec, state["challenger"], decision)
    return ledger(
        client,
        settings,
        spec,
        ctx,
        action,
        state.get("champion"),
        state["challenger"],
        reason[:4000],
        metrics,
    )


def _log_decision(
    client: MlflowClient, spec: ModelSpec, version: str, decision: RolloutDecision
) -> None:
    """The decision record as a tag of the version and an artifact of its run."""
    key = decision.stage if decision.step is None else f"canary_{decision.step}"
    client.set_model_version_tag(spec.name, version, f"retrainer.rollout.{key}", decision.outcome)
    run_id = client.get_model_version(spec.name, version).run_id
    if run_id:
        try:
            client.log_dict(run_id, decision.to_dict(), f"rollout/{key}.json")
        except Exception as exc:  # the ledger keeps the figures; the artifact is a convenience
            log.warning("could not log the rollout decision on run %s: %s", run_id, exc)


def _stop(
    client: MlflowClient,
    settings: Settings,
    spec: ModelSpec,
    ctx: RunContext,
    state: dict[str, Any],
    action: str,
    decision: RolloutDecision,
) -> RolloutStopped:
    """Take the challenger out of traffic at once, then record and alert; return the error."""
    admin(spec.name, "DELETE", settings)
    stopped_at = time.time()
    stage = decision.stage if decision.step is None else f"canary step {decision.step + 1}"
    reason = f"{stage}: " + "; ".join(decision.reasons)
    _record(client, settings, spec, ctx, state, action, reason, decision)
    client.set_model_version_tag(
        spec.name, state["challenger"], "retrainer.deploy", f"{action}: {reason[:4000]}"
    )
    _write_state(client, spec.name, None)
    where = f"v{state['champion']}"
    log.error("%s: %s v%s at %.0f: %s", spec.name, action, state["challenger"], stopped_at, reason)
    return RolloutStopped(
        f"{spec.name}: rollout of v{state['challenger']} {action.replace('_', ' ')} at {stage}: "
        f"{'; '.join(decision.reasons)}. The champion {where} answers all traffic. "
        f"See `retrainer history {spec.name}` and README: Runbook, A rollout stopped.",
        (
            stage,
            decision.reasons,
            f"v{state['challenger']} out of traffic; {where} answers all",
            str(state["challenger"]),
        ),
    )


# --- the steps the deploy DAG runs ----------------------------------------------------------------


def start(
    spec: ModelSpec,
    ctx: RunContext,
    version: str | None = None,
    settings: Settings | None = None,
    origin: str = "retrain",
) -> dict[str, Any]:
    """Put the challenger beside the champion: in shadow, or at the first canary step.

    Without a champion (a first deployment) or when the challenger is the champion there is
    nothing to compare: the rollout is skipped (`skip`) and the version is promoted directly.
    A rollback by hand (``origin`` manual, a version older than the champion) is skipped too:
    it puts back a version that served before, now, not after hours of shadow beside the model
    it replaces. A version pinned by hand is rolled out, but never replaced by a newer one.
    """
    settings = settings or get_settings()
    client = _client(settings)
    rollout = spec.deployment.rollout
    challenger = (
        str(version)
        if version not in (None, "")
        else alias_version(client, spec.name, C.ALIAS_CHALLENGER)
    )
    if challenger is None:
        raise DeployError(
            f"{spec.name}: no challenger to roll out and no version given; run {spec.retrain_dag_id} first"
        )
    champion = alias_version(client, spec.name, C.ALIAS_CHAMPION)
    now = time.time()
    state: dict[str, Any] = {
        "challenger": challenger,
        "champion": champion,
        "strategy": rollout.strategy,
        "started": now,
        "stage": "shadow" if rollout.shadow else "canary",
        "step": None if rollout.shadow else 0,
        "step_started": now,
        "dag_run_id": ctx.run_id,
        "manual": origin == "manual" and version not in (None, ""),
    }
    if champion is None or champion == challenger:
        log.info(
            "%s: no other champion to compare v%s with: direct deployment", spec.name, challenger
        )
        return {**state, "skip": True}
    if state["manual"] and int(challenger) < int(champion):
        log.info(
            "%s: rollback by hand from v%s to v%s: straight back, no rollout",
            spec.name,
            champion,
            challenger,
        )
        return {**state, "skip": True}
    client.set_registered_model_tag(spec.name, CONTROL_TAG, "")
    # The state first: a person who sees the challenger in serving can already pause or abort.
    _write_state(client, spec.name, state)
    if rollout.shadow:
        _put(spec, settings, challenger, "shadow", rollout.shadow_fraction)
        plan = f"shadow {rollout.shadow_fraction:.0%} until {rollout.min_rows} rows or {rollout.max_duration}"
    else:
        _put(spec, settings, challenger, "canary", rollout.canary_steps[0])
    if rollout.canary:
        steps = " -> ".join(f"{f:.0%}" for f in rollout.canary_steps)
        plan = (
            plan + ", then " if rollout.shadow else ""
        ) + f"canary {steps}, {rollout.bake_time} each"
    _record(client, settings, spec, ctx, state, "rollout_started", f"{rollout.strategy}: {plan}")
    if not rollout.shadow:
        _record(client, settings, spec, ctx, state, "canary_step", _step_reason(spec, 0))
    return state


def _step_reason(spec: ModelSpec, step: int) -> str:
    rollout = spec.deployment.rollout
    key = rollout.key or "request id"
    return (
        f"canary step {step + 1} of {len(rollout.canary_steps)}: "
        f"{rollout.canary_steps[step]:.0%} of traffic by {key}, bake {rollout.bake_time}"
    )


def _guard(
    client: MlflowClient,
    settings: Settings,
    spec: ModelSpec,
    ctx: RunContext,
    state: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """The current state, and whether it is paused; raise when aborted or superseded."""
    current, control = read_state(client, spec.name)
    if control == "abort" or current is None or current.get("challenger") != state["challenger"]:
        raise RolloutStopped(
            f"{spec.name}: the rollout of v{state['challenger']} was aborted (retrainer rollout "
            f"abort {spec.name}, or the Models page); serving and the aliases were reset then"
        )
    champion = alias_version(client, spec.name, C.ALIAS_CHAMPION)
    if current.get("champion") is not None and champion != current["champion"]:
        # moved by hand (the MLflow UI) or by another deployment: everything measured so far
        # compared the challenger with a version that is no longer the champion
        admin(spec.name, "DELETE", settings)
        why = (
            f"the champion alias moved from v{current['champion']} to v{champion} during the "
            f"rollout (by hand, or by another deployment); v{current['challenger']} was compared "
            f"with v{current['champion']}: deploy it again to compare it with the champion now"
        )
        _record(client, settings, spec, ctx, current, "aborted", why)
        _write_state(client, spec.name, None)
        raise RolloutStopped(f"{spec.name}: {why}")
    newest = alias_version(client, spec.name, C.ALIAS_CHALLENGER)
    if (
        spec.deployment.rollout.on_new_version == "replace"
        and not current.get("manual")
        and newest is not None
        and int(newest) > int(state["challenger"])
    ):
        admin(spec.name, "DELETE", settings)
        _record(
            client,
            settings,
            spec,
            ctx,
            current,
            "aborted",
            f"replaced by v{newest} (on_new_version: replace); its deploy run rolls it out next",
        )
        _write_state(client, spec.name, None)
        raise Superseded(
            f"{spec.name}: v{newest} was registered during the rollout of v{state['challenger']}; "
            "on_new_version: replace ended this rollout in its favour"
        )
    return current, control == "paused"


def _status(
    client: MlflowClient, spec: ModelSpec, settings: Settings, state: dict[str, Any]
) -> RolloutStatus | None:
    """Serving's status; after a serving restart (no rollout there) the step is put back: None.
    A canary step put back bakes again from then: its statistics started again from zero."""
    st = admin(spec.name, "GET", settings)
    expected = "shadow" if state["stage"] == "shadow" else "canary"
    if st.mode == expected and st.challenger == state["challenger"]:
        return st
    rollout = spec.deployment.rollout
    fraction = (
        rollout.shadow_fraction if expected == "shadow" else rollout.canary_steps[state["step"]]
    )
    log.warning(
        "%s: serving has no %s of v%s (restarted?); putting it back",
        spec.name,
        expected,
        state["challenger"],
    )
    _put(spec, settings, state["challenger"], expected, fraction)
    if expected == "canary":
        state["step_started"] = time.time()
        _write_state(client, spec.name, state)
    return None


def shadow_poke(
    spec: ModelSpec, ctx: RunContext, state: dict[str, Any], settings: Settings | None = None
) -> bool:
    """One check of the shadow: True once `min_rows` were mirrored or `max_duration` passed."""
    if state.get("skip"):
        return True
    settings = settings or get_settings()
    client = _client(settings)
    current, paused = _guard(client, settings, spec, ctx, state)
    st = _status(client, spec, settings, current)
    if st is None or paused:
        return False
    elapsed = time.time() - float(current["started"])
    log.info(
        "%s: shadow of v%s: %d mirrored rows (%d agree), %.0f s",
        spec.name,
        current["challenger"],
        st.mirrored.rows,
        st.mirrored.agree,
        elapsed,
    )
    return shadow_ready(spec.deployment.rollout, st, elapsed)


def shadow_decide(
    spec: ModelSpec, ctx: RunContext, state: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """The shadow decision: pass on to canary (or promotion), or stop the challenger."""
    if state.get("skip"):
        return {"outcome": "skip"}
    settings = settings or get_settings()
    client = _client(settings)
    current, _ = _guard(client, settings, spec, ctx, state)
    _flush(settings)  # the mirrored rows so far into the shadow log, for labels and segments
    st = admin(spec.name, "GET", settings)
    if st.mode != "shadow" or st.challenger != current["challenger"]:
        # serving restarted after wait_shadow: the statistics the decision needs are gone, and
        # "no mirrored rows" would blame the traffic for it
        why = (
            f"serving lost the shadow of v{current['challenger']} just before its decision "
            f"(restarted? it says mode {st.mode}); no verdict on the challenger: deploy it again"
        )
        _record(client, settings, spec, ctx, current, "aborted", why)
        _write_state(client, spec.name, None)
        raise RolloutStopped(f"{spec.name}: {why}")
    elapsed = time.time() - float(current["started"])
    shadow = _shadow_rows(settings, spec, float(current["started"]))
    paired = _paired(spec, settings, shadow)
    segments = _segments(spec, settings, shadow, float(current["started"]))
    decision = decide_shadow(
        spec.task,
        spec.deployment.rollout,
        st,
        elapsed,
        paired,
        spec.gate.primary_metric,
        segments,
    )
    log.info("%s\n%s", spec.name, decision.table())
    if decision.stopped:
        raise _stop(client, settings, spec, ctx, current, "shadow_stopped", decision)
    _record(
        client, settings, spec, ctx, current, "shadow_passed", "; ".join(decision.reasons), decision
    )
    if spec.deployment.rollout.canary:
        current.update(stage="canary_pending", step=None)
        _write_state(client, spec.name, current)
    return decision.to_dict()


def canary_poke(
    spec: ModelSpec,
    ctx: RunContext,
    state: dict[str, Any],
    step: int,
    settings: Settings | None = None,
) -> bool:
    """One check of canary step `step`: True when it baked within its SLOs; a breach rolls
    back at once (the challenger out of traffic inside this check) and raises."""
    if state.get("skip"):
        return True
    settings = settings or get_settings()
    client = _client(settings)
    rollout = spec.deployment.rollout
    current, paused = _guard(client, settings, spec, ctx, state)
    if current["stage"] != "canary" or current["step"] != step:
        if paused:  # traffic unchanged, no step advances (README: Safe rollout)
            log.info("%s: paused before canary step %d", spec.name, step + 1)
            return False
        _put(spec, settings, current["challenger"], "canary", rollout.canary_steps[step])
        current.update(stage="canary", step=step, step_started=time.time())
        _write_state(client, spec.name, current)
        _record(client, settings, spec, ctx, current, "canary_step", _step_reason(spec, step))
        return False
    st = _status(client, spec, settings, current)
    if st is None:
        return False
    elapsed = time.time() - float(current["step_started"])
    labelled = _canary_labels(spec, settings, float(current["step_started"]))
    decision = decide_canary(rollout, st, step, elapsed, labelled)
    log.info("%s\n%s", spec.name, decision.table())
    if decision.outcome == "rollback":
        raise _stop(client, settings, spec, ctx, current, "rolled_back", decision)
    if decision.outcome == "hold" or paused:  # a breach rolls back even while paused
        return False
    _log_decision(client, spec, current["challenger"], decision)
    return True


def end(
    spec: ModelSpec,
    ctx: RunContext,
    state: dict[str, Any] | None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """After promotion (or any ending): the challenger out of serving's rollout, state cleared.
    Nothing to do when no rollout started (a first deployment, or start_rollout failed early)."""
    if state is not None and state.get("skip"):
        return {"mode": "none", "challenger": None}
    settings = settings or get_settings()
    client = _client(settings)
    if state is None:  # start_rollout failed: whatever it wrote goes; serving was never changed
        _write_state(client, spec.name, None)
        return {"mode": "none", "challenger": None}
    from retrainer.stores.ledger import moved_in_run

    current, _ = read_state(client, spec.name)
    final = admin(spec.name, "DELETE", settings)
    challenger = str(state["challenger"])
    if (
        current is not None
        and str(current.get("challenger")) == challenger
        and moved_in_run(client, spec.name, ctx.run_id, challenger) is None
    ):
        # Still in progress, never promoted, and no stop recorded it: a task failed for good,
        # timed out, or was not approved. The ledger says so, not only Airflow's task list.
        why = (
            f"the rollout of v{challenger} ended without a verdict: a task of deploy run "
            f"{ctx.run_id} failed, timed out or was not approved (see it in Airflow); the "
            "champion answers all traffic"
        )
        _record(client, settings, spec, ctx, current, "aborted", why)
        client.set_model_version_tag(spec.name, challenger, "retrainer.deploy", why[:4000])
    _write_state(client, spec.name, None)
    client.set_registered_model_tag(spec.name, CONTROL_TAG, "")
    return {"mode": final.mode, "challenger": final.challenger}


# --- people in charge: the CLI and the Models page ------------------------------------------------


def set_control(
    spec: ModelSpec, ctx: RunContext, action: str, settings: Settings | None = None
) -> dict[str, Any]:
    """pause, resume or abort the rollout in progress. Abort acts at once: serving drops the
    challenger (DELETE), the version is tagged, and the waiting task fails at its next check."""
    settings = settings or get_settings()
    client = _client(settings)
    state, control = read_state(client, spec.name)
    if state is None:
        raise DeployError(
            f"{spec.name}: no rollout in progress; `retrainer rollout status {spec.name}` shows "
            "serving's view, `retrainer history` the past ones"
        )
    if action == "abort":
        if alias_version(client, spec.name, C.ALIAS_CHAMPION) == state["challenger"]:
            raise DeployError(
                f"{spec.name}: v{state['challenger']} is already the champion (its rollout "
                f"passed and promoted it); to go back, `retrainer rollback {spec.name}`"
            )
        admin(spec.name, "DELETE", settings)
        client.set_registered_model_tag(spec.name, CONTROL_TAG, "abort")
        client.set_model_version_tag(
            spec.name, state["challenger"], "retrainer.deploy", f"aborted by {ctx.triggered_by}"
        )
        _write_state(client, spec.name, None)
        entry = "aborted"
    elif action in ("pause", "resume"):
        client.set_registered_model_tag(
            spec.name, CONTROL_TAG, "paused" if action == "pause" else ""
        )
        entry = "paused" if action == "pause" else "resumed"
    else:
        raise DeployError(f"rollout control: expected pause, resume or abort; found {action!r}")
    if control == "paused" and action == "pause":
        return {"state": state, "control": "paused", "changed": False}
    _record(client, settings, spec, ctx, state, entry, f"{entry} by {ctx.triggered_by}")
    return {"state": state, "control": read_state(client, spec.name)[1], "changed": True}


def describe(spec: ModelSpec, settings: Settings | None = None) -> dict[str, Any]:
    """The rollout as the registry and serving see it."""
    settings = settings or get_settings()
    state, control = read_state(_client(settings), spec.name)
    try:
        serving: Any = asdict(admin(spec.name, "GET", settings))
    except DeployError as exc:
        serving = str(exc)
    return {"state": state, "control": control or "running" if state else "", "serving": serving}


# --- what the logs say about the mirrored rows ---------------------------------------------------


def _flush(settings: Settings) -> None:
    try:
        httpx.post(
            f"{settings.serving_url}/flush",
            headers={"Authorization": f"Bearer {serving_admin_token(settings)}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        log.warning("could not flush serving's logs: %s", exc)


def _shadow_rows(settings: Settings, spec: ModelSpec, since: float) -> pd.DataFrame:
    from datetime import UTC, datetime

    from retrainer.steps.rollout_log import read_shadow

    return read_shadow(settings, spec.name, datetime.fromtimestamp(since, UTC))


def _with_labels(spec: ModelSpec, settings: Settings, rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (with `_request_id`, `_row`, `_ts`) joined with their delayed labels."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from retrainer.steps.monitor.window import last_labels, read_log

    if rows.empty:
        return rows
    start = pd.to_datetime(rows["_ts"]).min().to_pydatetime()
    fb = read_log(
        settings.feedback_root, spec.name, start, datetime.now(UTC) + timedelta(minutes=1)
    )
    if fb.empty:
        return rows.iloc[0:0]
    fb = last_labels(fb)
    joined = rows.assign(_row=rows["_row"].astype("int64")).merge(
        fb[["_request_id", "_row", "_label"]].assign(_row=fb["_row"].astype("int64")),
        on=["_request_id", "_row"],
    )
    return joined.dropna(subset=["_label"])


def _encode(
    spec: ModelSpec, joined: pd.DataFrame, columns: list[tuple[str, str]]
) -> tuple[Any, list[Any], int | None] | None:
    """Labels and each (prediction, score) column pair as the gate's `Scored` inputs; None when
    the logs cannot give them (a classifier with other than two classes: the logs keep only the
    predicted label's probability)."""
    import numpy as np
    import pandas as pd

    from retrainer.core.comparison import Scored

    if spec.task == "regression":
        y = pd.to_numeric(joined["_label"], errors="coerce").to_numpy(float)
        return y, [Scored(joined[pred].to_numpy(float)) for pred, _ in columns], None
    seen = pd.concat([joined["_label"]] + [joined[pred] for pred, _ in columns])
    classes = sorted({str(v) for v in seen})
    if len(classes) != 2:
        return None
    pos = str(spec.data.positive_class) if spec.data.positive_class is not None else classes[1]
    classes = [c for c in classes if c != pos] + [pos]
    y = np.array([classes.index(str(v)) for v in joined["_label"]])
    scored = []
    for pred_col, score_col in columns:
        pred = np.array([classes.index(str(v)) for v in joined[pred_col]])
        score = joined[score_col].to_numpy(float)
        p1 = np.where(pred == 1, score, 1 - score)
        scored.append(Scored(pred, np.column_stack([1 - p1, p1])))
    return y, scored, 1


def _paired(spec: ModelSpec, settings: Settings, shadow: pd.DataFrame) -> Any:
    """The gate's paired comparison on mirrored rows whose delayed labels arrived (None when
    fewer than monitoring.min_rows, or not a binary classifier / regressor)."""
    from retrainer.core.comparison import compare

    joined = _with_labels(spec, settings, shadow)
    if len(joined) < spec.monitoring.min_rows:
        return None
    encoded = _encode(
        spec, joined, [("_prediction", "_score"), ("_champion_prediction", "_champion_score")]
    )
    if encoded is None:
        return None
    y, (cand, champ), positive = encoded
    gate = spec.gate
    rule = "non_inferiority" if gate.rule == "point" else gate.rule
    return compare(
        spec.task,
        [gate.primary_metric],
        y,
        cand,
        champ,
        positive=positive,
        comparison=rule,  # type: ignore[arg-type]
        margin=gate.effective_margin,
        confidence=gate.confidence,
        resamples=gate.resamples,
    )


def _canary_labels(spec: ModelSpec, settings: Settings, since: float) -> dict[str, Any] | None:
    """The primary metric of each version on the labelled rows it answered since `since` (the
    step's start); None until each has monitoring.min_rows of them."""
    from datetime import UTC, datetime

    from retrainer.core.comparison import point_metrics
    from retrainer.spec import LOWER_IS_BETTER
    from retrainer.steps.monitor.window import read_log

    logged = read_log(
        settings.inference_log_root,
        spec.name,
        datetime.fromtimestamp(since, UTC),
        datetime.now(UTC),
    )
    if logged.empty or "_role" not in logged:
        return None
    joined = _with_labels(spec, settings, logged)
    metric, values, rows = spec.gate.primary_metric, {}, {}
    for role in ("champion", "challenger"):
        part = joined[joined["_role"].fillna("champion") == role]
        if len(part) < spec.monitoring.min_rows:
            return None
        encoded = _encode(spec, part, [("_prediction", "_score")])
        if encoded is None:
            return None
        y, (scored,), positive = encoded
        values[role] = point_metrics(spec.task, [metric], y, scored, positive)[metric]
        rows[role] = len(part)
    return {
        "metric": metric,
        "challenger": values["challenger"],
        "champion": values["champion"],
        "rows": min(rows.values()),
        "lower_is_better": metric in LOWER_IS_BETTER,
    }


def _segments(
    spec: ModelSpec, settings: Settings, shadow: pd.DataFrame, since: float
) -> list[dict[str, Any]]:
    """Where the two versions disagree most: categorical feature values of the mirrored rows
    (from the inference log) with the largest disagreement counts above the overall rate."""
    from datetime import UTC, datetime

    import pandas as pd

    from retrainer.steps.monitor.window import read_log

    if shadow.empty or spec.task != "classification":
        return []
    logged = read_log(
        settings.inference_log_root,
        spec.name,
        datetime.fromtimestamp(since, UTC),
        datetime.now(UTC),
    )
    if logged.empty:
        return []
    rows = shadow.assign(
        _row=shadow["_row"].astype("int64"),
        _disagree=(shadow["_prediction"].astype(str) != shadow["_champion_prediction"].astype(str)),
    )[["_request_id", "_row", "_disagree"]]
    joined = logged.assign(_row=logged["_row"].astype("int64")).merge(
        rows, on=["_request_id", "_row"]
    )
    if joined.empty:
        return []
    overall = float(joined["_disagree"].mean())
    feats = spec.data.features
    columns = (
        list(feats.categorical)
        if feats is not None
        else [c for c in joined.columns if not c.startswith("_") and joined[c].dtype == object]
    )
    out: list[dict[str, Any]] = []
    for column in columns:
        if column not in joined:
            continue
        grouped = joined.groupby(joined[column].astype(str), dropna=False)["_disagree"].agg(
            ["sum", "count"]
        )
        for value, row in grouped.iterrows():
            n, bad = int(row["count"]), int(row["sum"])
            if n >= SEGMENT_MIN_ROWS and bad and bad / n > overall:
                out.append({"column": column, "value": str(value), "rows": n, "disagree": bad})
    out.sort(key=lambda s: (-s["disagree"], s["column"], s["value"]))
    return out[:5] if not pd.isna(overall) else []
