"""`<model>_deploy`: (approve,) promote, reload serving, smoke test; roll back on failure."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, XComArg, task
from airflow.sdk.exceptions import AirflowFailException

from retrainer.orchestration.common import model_dag, run_context, run_step
from retrainer.spec import ModelSpec


def deploy_doc(spec: ModelSpec) -> str:
    approval = (
        "**approve**: a person approves or rejects in the Airflow UI (Required Actions); a "
        "rejection ends the run and leaves the champion as it was.\n"
        if spec.deployment.approval == "manual"
        else ""
    )
    return textwrap.dedent(
        f"""\
        ### Deploy `{spec.name}`
        Triggered by `{spec.retrain_dag_id}` after a candidate is registered, or by hand.

        {approval}
        1. **promote_champion**: alias `champion` moves to the version (default: `challenger`);
           the old champion becomes `previous`. Written to the promotion ledger
           (`retrainer history {spec.name}`).
        2. **reload_serving**: the serving API loads it; if loading fails it keeps the old one.
        3. **smoke_test**: the live endpoint serves the new version and answers held-back rows
           exactly as the registered model does.
        4. **rollback** (only on failure): `champion` goes back to the replaced version, serving
           reloads it, the ledger records it, and the run fails loudly.

        Trigger with **version** to roll back or pin a version (`retrainer rollback {spec.name}`).
        """
    ) + rollout_doc(spec)


def rollout_doc(spec: ModelSpec) -> str:
    r = spec.deployment.rollout
    if r.strategy == "direct":
        return ""
    steps = " -> ".join(f"{f:.0%}" for f in r.canary_steps)
    return textwrap.dedent(
        f"""
        #### Rollout: `{r.strategy}` (README: Safe rollout)
        Before promotion: **start_rollout** puts the challenger beside the champion in serving;
        """
        + (
            f"**wait_shadow** mirrors {r.shadow_fraction:.0%} of requests until {r.min_rows} rows "
            f"or {r.max_duration}; **decide_shadow** passes or stops it (agreement, errors, p99, "
            "paired labels); "
            if r.shadow
            else ""
        )
        + (
            f"**canary_step_N** answers {steps} of traffic, {r.bake_time} each, rolling back at "
            "once on an SLO breach; "
            if r.canary
            else ""
        )
        + f"every {r.check_interval}"
        + (", without holding a worker slot" if r.check_seconds >= RESCHEDULE_FROM_SECONDS else "")
        + ". With no champion yet (a first deployment) and automatic approval, **start_rollout** "
        "branches to **direct_deployment** and the rollout's tasks are skipped. "
        "**end_rollout** ends it. "
        f"Pause / resume / abort: `{spec.name}_rollout_control` or `retrainer rollout ... "
        f"{spec.name}`. A newer version during a rollout: `{r.on_new_version}`.\n"
    )


WAIT_TIMEOUT = 7 * 86400  # a waiting rollout task gives up after a week (pauses included)
# Waits that check this often or less often free their worker slot between checks (reschedule
# mode); shorter ones keep it (poke mode). Each rescheduled check is a new task process and a
# round through the scheduler: 2-4 s here, which made a 6 s canary step take 14 s. Airflow's
# own guidance for reschedule mode is a poke interval of at least a minute.
RESCHEDULE_FROM_SECONDS = 60.0
DIRECT = "direct_deployment"  # start_rollout's branch when there is nothing to roll out against
# Retries of the tasks that wait across scheduler loops (rollout sensors, approve): the scheduler
# may fail them on a stale executor event (see rollout_tasks); their own failures never retry.
# Five: in the production test's worker restart one wait_shadow used three tries (the kill,
# then this race twice).
STALE_EVENT_RETRIES = 5


def stale_event_retries(delay_seconds: float) -> dict[str, Any]:
    """Task arguments: STALE_EVENT_RETRIES retries, a fixed delay between them."""
    return {
        "retries": STALE_EVENT_RETRIES,
        "retry_delay": timedelta(seconds=delay_seconds),
        "retry_exponential_backoff": False,
    }


def _rollout_step(spec: ModelSpec, context: Any, step: Any, *args: Any) -> Any:
    """Run a rollout step; a stopped rollout alerts (rollout_stopped) and fails the task with its
    reason, a superseded one (on_new_version: replace) skips the rest of the run."""
    from retrainer.steps.rollout import RolloutStopped, Superseded

    try:
        return run_step(step, spec, run_context(context), *args, skip_on=(Superseded,))
    except AirflowFailException as exc:
        cause = exc.__cause__
        if (
            isinstance(cause, RolloutStopped)
            and cause.alert
            and spec.alert_destinations("rollout_stopped")
        ):
            from retrainer.orchestration.notify import alert
            from retrainer.steps.alerts import rollout_stopped_alert

            stage, measured, action, version = cause.alert
            alert(
                spec,
                rollout_stopped_alert(
                    spec, stage, measured, action, context["run_id"], version=version
                ),
            )
        raise


def rollout_tasks(spec: ModelSpec) -> Any:
    """start_rollout -> (wait_shadow -> decide_shadow) -> canary_step_1..n, or start_rollout ->
    direct_deployment when there is nothing to roll out against. The waits are sensors; from a
    check interval of RESCHEDULE_FROM_SECONDS on, in reschedule mode (no worker slot held
    between checks).

    start_rollout is a branch: its rollout state is the XCom `state` (the return value names the
    branch). A first deployment (no champion yet) with automatic approval takes the empty
    `direct_deployment` task, which the scheduler completes without a process, and skips the
    rollout's tasks instead of running each just to pass (about 10 s). With manual approval it
    takes the rollout's path as before, so the person still approves before promotion.

    The waits retry (STALE_EVENT_RETRIES): Airflow's scheduler can fail a reschedule-mode sensor
    whose next check was queued before the executor's report of the previous check was read
    ("finished with state success, but the task instance's state attribute is queued",
    apache/airflow#71172, open in 3.3). A stopped rollout never retries: its steps raise
    AirflowFailException."""
    from airflow.providers.standard.operators.empty import EmptyOperator

    rollout = spec.deployment.rollout
    wait: dict[str, Any] = {
        "mode": "reschedule" if rollout.check_seconds >= RESCHEDULE_FROM_SECONDS else "poke",
        "poke_interval": rollout.check_seconds,
        "timeout": WAIT_TIMEOUT,
        **stale_event_retries(max(5.0, rollout.check_seconds)),
    }

    @task.branch
    def start_rollout(**context: Any) -> list[str]:
        from retrainer.steps import rollout as steps

        version = context["params"].get("version")
        started = _rollout_step(
            spec,
            context,
            steps.start,
            str(version) if version not in (None, "") else None,
            None,  # settings: the task's own
            str(context["params"].get("origin") or "manual"),
        )
        context["ti"].xcom_push(key="state", value=started)
        follow = set(context["task"].downstream_task_ids)
        if started.get("skip") and DIRECT in follow:
            return [DIRECT]
        return sorted(follow - {DIRECT})  # the rollout's tasks (and approve, if it waits on this)

    @task.sensor(**wait)
    def wait_shadow(state: dict[str, Any], **context: Any) -> bool:
        from retrainer.steps import rollout as steps

        return bool(_rollout_step(spec, context, steps.shadow_poke, state))

    @task(retries=0)
    def decide_shadow(state: dict[str, Any], **context: Any) -> dict[str, Any]:
        from retrainer.steps import rollout as steps

        return dict(_rollout_step(spec, context, steps.shadow_decide, state))

    def canary_step(step: int) -> Any:
        @task.sensor(task_id=f"canary_step_{step + 1}", **wait)
        def check(state: dict[str, Any], **context: Any) -> bool:
            from retrainer.steps import rollout as steps

            return bool(_rollout_step(spec, context, steps.canary_poke, state, step))

        return check

    branch = start_rollout()
    state = XComArg(branch.operator, key="state")  # type: ignore[attr-defined]
    last: Any = None
    if rollout.shadow:
        last = wait_shadow(state)  # type: ignore[arg-type]
        last >> (last := decide_shadow(state))  # type: ignore[arg-type]
    if rollout.canary:
        for i in range(len(rollout.canary_steps)):
            step = canary_step(i)(state)
            if last is not None:
                last >> step
            last = step
    if spec.deployment.approval != "auto":
        return last, None
    direct = EmptyOperator(task_id=DIRECT)
    branch >> direct
    return last, direct


def end_rollout_task(spec: ModelSpec) -> Any:
    @task(trigger_rule="all_done", retries=2)
    def end_rollout(**context: Any) -> dict[str, Any]:
        from retrainer.steps import rollout as steps

        started = context["ti"].xcom_pull(task_ids="start_rollout", key="state")
        return dict(run_step(steps.end, spec, run_context(context), started))

    return end_rollout()


def deploy_dag(spec: ModelSpec, path: Path | None = None) -> DAG:
    with model_dag(
        spec,
        "deploy",
        f"Promote, reload serving, smoke test and (on failure) roll back {spec.name}",
        deploy_doc(spec),
        params={
            "version": Param(
                None,
                type=["null", "string", "integer"],
                title="Version",
                description="Deploy this registered version (a rollback or a pin); empty: the challenger",
            ),
            "reason": Param(
                "manual", type="string", title="Reason", description="Recorded in the ledger"
            ),
            "origin": Param(
                "manual",
                enum=["manual", "retrain"],
                title="Origin",
                description="retrain: a candidate that just passed the gate (set by the retrain DAG)",
            ),
        },
    ) as dag:
        rollout = spec.deployment.rollout

        # After a rollout: when its last step or direct_deployment succeeded, and nothing failed
        # (a rejection or a superseded rollout skips both, so no promotion either).
        @task(
            trigger_rule="all_success"
            if rollout.strategy == "direct"
            else "none_failed_min_one_success"
        )
        def promote_champion(**context: Any) -> dict[str, Any]:
            from retrainer.steps import deploy

            rolled = (
                context["ti"].xcom_pull(task_ids="start_rollout", key="state")
                if rollout.strategy != "direct"
                else None
            )
            params = context["params"]
            version = params.get("version")
            origin = str(params.get("origin") or "manual")
            if rolled is not None:  # exactly the version that went through the rollout
                if version in (None, ""):
                    origin = "retrain"  # the challenger: a promotion, not a pin
                version = rolled["challenger"]
            return run_step(
                deploy.promote,
                spec,
                run_context(context),
                version=str(version) if version not in (None, "") else None,
                reason=str(params.get("reason") or ""),
                origin=origin,
            )

        @task(retries=1)
        def reload_serving(promoted: dict[str, Any]) -> dict[str, Any]:
            from retrainer.steps import deploy

            return run_step(deploy.reload_serving, spec, promoted["version"])

        @task(retries=0)
        def smoke_test(promoted: dict[str, Any], reloaded: dict[str, Any]) -> dict[str, Any]:
            from retrainer.steps import deploy

            return run_step(deploy.smoke_test, spec, promoted["version"])

        @task(trigger_rule="one_failed", retries=0)
        def rollback(**context: Any) -> None:
            from retrainer.steps import deploy

            ti = context["ti"]
            promoted = ti.xcom_pull(task_ids="promote_champion")
            if promoted is None and spec.deployment.rollout.strategy != "direct":
                raise AirflowFailException(
                    f"{spec.name}: the rollout stopped before promotion (see the red rollout task "
                    "and `retrainer history`); the champion answers all traffic, aliases unchanged"
                )
            done = run_step(
                deploy.rollback, spec, run_context(context), promoted, "reload or smoke test failed"
            )
            if done is not None and spec.alert_destinations("deploy_rolled_back"):
                from retrainer.orchestration.notify import alert
                from retrainer.steps.alerts import rollback_alert

                error = "reload or smoke test failed (see reload_serving / smoke_test)"
                alert(spec, rollback_alert(spec, done, error, context["run_id"]))
            if done is None:
                raise AirflowFailException(
                    f"{spec.name}: deployment failed before anything changed; champion untouched"
                )
            raise AirflowFailException(
                f"{spec.name}: deployment of v{done['from']} failed (see reload_serving / smoke_test); "
                f"rolled back to v{done['to']}, which serving answers with"
            )

        decided, direct = rollout_tasks(spec) if rollout.strategy != "direct" else (None, None)
        promoted = promote_champion()
        if decided is not None:
            decided >> promoted
        if direct is not None:
            direct >> promoted
        if spec.deployment.approval == "manual":
            from airflow.providers.standard.operators.hitl import ApprovalOperator

            approve = ApprovalOperator(
                task_id="approve",
                subject=f"Deploy {spec.name}?",
                body=f"Approve to make the challenger of `{spec.name}` the champion behind the serving API. "
                f"See the gate decision in MLflow (experiment `{spec.experiment_name}`)"
                + (" and the shadow decision (task decide_shadow)." if rollout.shadow else "."),
                # The scheduler can fail it on a stale executor event when the answer comes
                # within seconds of the question (see rollout_tasks): then it asks again.
                **stale_event_retries(5),
            )
            # A person approves before clients first see the challenger: after the shadow.
            first_live = dag.get_task("canary_step_1") if rollout.canary else promoted.operator  # type: ignore[attr-defined]
            for upstream in list(first_live.upstream_list):
                upstream >> approve
            approve >> first_live
        reloaded = reload_serving(promoted)  # type: ignore[arg-type]
        checked = smoke_test(promoted, reloaded)  # type: ignore[arg-type]
        [reloaded, checked] >> rollback()
        if decided is not None:
            [promoted, reloaded, checked] >> end_rollout_task(spec)
    return dag


def rollout_control_dag(spec: ModelSpec) -> DAG:
    """`<model>_rollout_control`: pause, resume or abort the rollout in progress from the Airflow
    UI. Its own DAG, because the deploy DAG's one active run is the rollout it acts on (a second
    deploy run carrying the control would queue behind it)."""
    with model_dag(
        spec,
        "rollout_control",
        f"Pause, resume or abort the rollout of {spec.name} in progress",
        textwrap.dedent(
            f"""\
            ### Control the rollout of `{spec.name}`
            Trigger with **action** `pause` (hold where it is: traffic unchanged, no step
            advances; an SLO breach still rolls back), `resume`, or `abort` (the challenger out
            of traffic at once; the waiting `{spec.deploy_dag_id}` run fails at its next check).
            Each is recorded in the ledger. Same as `retrainer rollout pause|resume|abort {spec.name}`.
            """
        ),
        params={
            "action": Param(
                "pause", enum=["pause", "resume", "abort"], title="Action", description=""
            )
        },
    ) as dag:

        @task(retries=0)
        def control_rollout(**context: Any) -> dict[str, Any]:
            from retrainer.steps import rollout as steps

            action = str(context["params"]["action"])
            return dict(run_step(steps.set_control, spec, run_context(context), action))

        control_rollout()
    return dag


def deploy_extra_dags(spec: ModelSpec) -> list[DAG]:
    """The DAGs beside `<model>_deploy`: its rollout control, when it rolls out."""
    return [rollout_control_dag(spec)] if spec.deployment.rollout.strategy != "direct" else []
