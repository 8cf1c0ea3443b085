"""`retrainer rollout status|pause|resume|abort MODEL`: people in charge of a rollout.

They act on the registry and serving directly, not through the deploy DAG (whose one active run
may be waiting in a rollout): abort takes the challenger out of traffic at once; the waiting
task sees the control at its next check (README: Safe rollout).
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer

from retrainer.cli.common import _settings, console, fail
from retrainer.errors import RetrainerError

app = typer.Typer()
rollout = typer.Typer(
    help="A rollout in progress: status, pause, resume, abort.", no_args_is_help=True
)
app.add_typer(rollout, name="rollout")
Model = Annotated[str, typer.Argument(help="model name")]


def _spec(model: str) -> Any:
    from retrainer.spec import find_spec

    return find_spec(_settings().models_dir, model)


@rollout.command()
def status(model: Model) -> None:
    """The rollout of MODEL as the registry (state, control) and serving (traffic, stats) see it."""
    from retrainer.steps.rollout import describe

    try:
        console.print_json(json.dumps(describe(_spec(model)), default=str))
    except RetrainerError as exc:
        fail(str(exc))


def _control(model: str, action: str) -> None:
    from retrainer.config.settings import RunContext
    from retrainer.steps.rollout import set_control

    ctx = RunContext(
        dag_id="cli", run_id=f"rollout-{action}", triggered_by=f"cli:{getpass.getuser()}"
    )
    try:
        done = set_control(_spec(model), ctx, action)
    except RetrainerError as exc:
        fail(str(exc))
        return
    state = done["state"]
    console.print(
        f"{model}: rollout of v{state['challenger']} (champion v{state['champion']}): "
        f"{action} {'recorded' if done['changed'] else '(already so)'}; control: "
        f"{done['control'] or 'running'}"
    )


@rollout.command()
def pause(model: Model) -> None:
    """Hold the rollout where it is: traffic stays as it is, no step advances (an SLO breach
    still rolls back)."""
    _control(model, "pause")


@rollout.command()
def resume(model: Model) -> None:
    """Let a paused rollout advance again at its next check."""
    _control(model, "resume")


@rollout.command()
def abort(model: Model) -> None:
    """Take the challenger out of traffic now; the champion keeps every request."""
    _control(model, "abort")
