"""The rollout's state machine under what an unattended platform meets: MLflow failing in the
middle of a promotion, a rollback by hand, serving restarting mid-canary, an abort after the
promotion, a pause before the next step, the champion alias moved by hand.

The step functions and MLflow (registry, aliases, ledger) are real; serving's admin route is a
stand-in that keeps its rollout in memory and forgets it on restart(), as serving does (the
real route is tested in test_serving_rollout.py, the whole DAG in test_rollout_dag.py)."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import pytest

from retrainer import constants as C
from retrainer.config.settings import RunContext, get_settings
from retrainer.core.rollout import RolloutStatus
from retrainer.spec import parse_spec
from retrainer.steps import deploy as D
from retrainer.steps import rollout as R
from retrainer.stores.ledger import history

pytestmark = pytest.mark.integration


class Serving:
    """Serving's rollout route, in memory; restart() forgets it, as a restarted serving does."""

    def __init__(self, name: str, champion: str) -> None:
        self.name, self.champion, self.rollout = name, champion, None
        self.stats: dict[str, Any] = {}
        self.calls: list[str] = []

    def restart(self) -> None:
        self.rollout = None

    def body(self) -> dict[str, Any]:
        if self.rollout is None:
            return {"model": self.name, "mode": "none", "champion": self.champion,
                    "challenger": None, "fraction": 0.0, "stats": {}}  # fmt: skip
        return {"model": self.name, "champion": self.champion, **self.rollout, "stats": self.stats}

    def admin(self, name: str, method: str, settings: Any, body: Any = None) -> RolloutStatus:
        self.calls.append(method)
        if method == "PUT":
            self.rollout = {k: body[k] for k in ("mode", "challenger", "fraction", "key")}
            self.stats = {}
        out = RolloutStatus.from_dict(self.body())
        if method == "DELETE":
            self.rollout = None
        return out

    def reload(self, spec: Any, version: str, settings: Any = None) -> dict[str, Any]:
        self.champion = version
        return {"ok": True, "serving": version}


@pytest.fixture
def model(monkeypatch, request):
    """A registered model with v1..v3: champion v2, previous v1, challenger v3."""
    from retrainer.stores.registry import ensure_registered_model

    name = f"ev_{request.node.name[5:40].lower()}_{time.time_ns() % 10**6}"
    client = D._client(get_settings())
    ensure_registered_model(client, name)
    source = tempfile.mkdtemp()
    for _ in range(3):
        client.create_model_version(name, source=source)
    for alias, version in (
        (C.ALIAS_CHAMPION, "2"),
        (C.ALIAS_PREVIOUS, "1"),
        (C.ALIAS_CHALLENGER, "3"),
    ):
        client.set_registered_model_alias(name, alias, version)
    serving = Serving(name, "2")
    monkeypatch.setattr(R, "admin", serving.admin)
    monkeypatch.setattr(R, "_flush", lambda settings: None)
    monkeypatch.setattr(R, "_canary_labels", lambda *a, **k: None)
    monkeypatch.setattr(D, "_update_cards", lambda *a, **k: None)
    monkeypatch.setattr(D, "reload_serving", serving.reload)
    return name, client, serving


def spec_of(name: str, **rollout: Any):
    from pathlib import Path

    from retrainer.spec import load_spec

    raw = load_spec(Path(__file__).resolve().parents[2] / "models" / "credit_default.yaml")
    raw = raw.model_dump()
    raw["name"] = name
    raw["deployment"]["rollout"] = {
        "strategy": "canary", "check_interval": "1s", "bake_time": "1s",
        "canary_steps": [0.05, 1.0], **rollout,
    }  # fmt: skip
    return parse_spec(raw)


def ctx(run: str = "deploy_1", by: str = "airflow") -> RunContext:
    return RunContext(dag_id="m_deploy", run_id=run, triggered_by=by)


def alias(client, name: str, which: str) -> str | None:
    return D.alias_version(client, name, which)


def ledger(client, name: str) -> list[tuple]:
    return [(e.action, e.from_version, e.to_version) for e in reversed(history(client, name))]


@pytest.mark.parametrize("fails", ["ledger", "alias"])
def test_a_promotion_retried_after_mlflow_failed_keeps_the_champion_it_replaced(
    model, monkeypatch, fails
):
    """MLflow fails under the first try, writing the ledger entry or moving the alias: the
    retry still knows v2, so the rollback puts it back. (Before, the aliases moved first: a
    ledger failure left the alias on v3, the retry said 'confirm v3 -> v3', and the rollback
    left the alias on v3 with serving on v2.)"""
    from mlflow.exceptions import MlflowException

    name, client, serving = model
    spec = spec_of(name)
    failed: list[bool] = []

    def once(real):
        def call(*args, **kwargs):
            if not failed:
                failed.append(True)
                raise MlflowException("Connection refused")
            return real(*args, **kwargs)

        return call

    if fails == "ledger":
        monkeypatch.setattr(D, "ledger", once(D.ledger))
    else:
        real = type(client).set_registered_model_alias
        wrapped = once(real)
        monkeypatch.setattr(
            type(client),
            "set_registered_model_alias",
            lambda self, m, a, v: (
                wrapped(self, m, a, v) if a == C.ALIAS_CHAMPION else real(self, m, a, v)
            ),
        )
    with pytest.raises(MlflowException):
        D.promote(spec, ctx(), version="3", origin="retrain")
    promoted = D.promote(spec, ctx(), version="3", origin="retrain")  # Airflow's retry
    assert (promoted["action"], promoted["previous"]) == ("promote", "2")
    assert alias(client, name, C.ALIAS_CHAMPION) == "3"
    assert alias(client, name, C.ALIAS_PREVIOUS) == "2"
    done = D.rollback(spec, ctx(), promoted, "reload or smoke test failed")
    assert done is not None and done["to"] == "2"
    assert alias(client, name, C.ALIAS_CHAMPION) == "2" and serving.champion == "2"
    assert ledger(client, name) == [("promote", "2", "3"), ("auto-rollback", "3", "2")]


def test_a_rollback_by_hand_goes_straight_back_even_with_replace(model):
    name, client, serving = model
    client.set_registered_model_alias(name, C.ALIAS_CHAMPION, "3")
    spec = spec_of(name, on_new_version="replace")
    state = R.start(spec, ctx(by="cli"), "2", None, "manual")
    assert state["skip"] and serving.calls == []  # no shadow beside the bad model
    promoted = D.promote(spec, ctx(by="cli"), version="2", origin="manual")
    assert promoted["action"] == "rollback" and alias(client, name, C.ALIAS_CHAMPION) == "2"
    # a newer version pinned by hand is rolled out, and a newer challenger never replaces it
    client.set_registered_model_alias(name, C.ALIAS_CHAMPION, "1")
    pinned = R.start(spec, ctx("deploy_2", "cli"), "2", None, "manual")
    assert not pinned.get("skip") and pinned["manual"]
    assert R.canary_poke(spec, ctx("deploy_2"), pinned, 0) is False  # challenger alias v3 > v2
    assert R.read_state(client, name)[0]["challenger"] == "2"


def test_a_canary_step_put_back_after_a_serving_restart_bakes_again(model):
    name, client, serving = model
    spec = spec_of(name, bake_time="30m")
    state = R.start(spec, ctx())
    current, _ = R.read_state(client, name)
    current["step_started"] = time.time() - 29 * 60  # 29 of its 30 minutes baked
    R._write_state(client, name, current)
    serving.restart()
    assert R.canary_poke(spec, ctx(), state, 0) is False  # put back
    assert serving.rollout is not None and serving.rollout["mode"] == "canary"
    current, _ = R.read_state(client, name)
    assert time.time() - current["step_started"] < 60  # the step bakes again, from zero


def test_a_baked_step_with_no_challenger_request_holds(model):
    name, client, serving = model
    spec = spec_of(name)
    state = R.start(spec, ctx())
    time.sleep(1.1)
    serving.stats = {"challenger": {"requests": 0}, "champion": {"requests": 40}}
    assert R.canary_poke(spec, ctx(), state, 0) is False
    serving.stats = {"challenger": {"requests": 3}, "champion": {"requests": 40}}
    assert R.canary_poke(spec, ctx(), state, 0) is True


def promoted_after_one_step(name: str, serving: Serving):
    """A one-step canary of v3 that baked and passed, then promote_champion: (spec, state)."""
    spec = spec_of(name, canary_steps=[1.0])
    state = R.start(spec, ctx())
    time.sleep(1.1)
    serving.stats = {"challenger": {"requests": 300}}
    assert R.canary_poke(spec, ctx(), state, 0) is True
    D.promote(spec, ctx(), version="3", origin="retrain")
    return spec, state


def test_an_abort_after_the_promotion_is_refused_not_recorded(model):
    name, client, serving = model
    spec, state = promoted_after_one_step(name, serving)
    with pytest.raises(D.DeployError, match=r"v3 is already the champion.*retrainer rollback"):
        R.set_control(spec, ctx("ctl", "alice"), "abort")
    assert "aborted" not in [a for a, _, _ in ledger(client, name)]
    assert alias(client, name, C.ALIAS_CHAMPION) == "3"


def test_a_paused_rollout_does_not_step_up(model):
    name, client, serving = model
    spec = spec_of(name)
    state = R.start(spec, ctx())
    time.sleep(1.1)
    serving.stats = {"challenger": {"requests": 300}}
    assert R.canary_poke(spec, ctx(), state, 0) is True  # step 1 (5%) done
    R.set_control(spec, ctx("ctl", "alice"), "pause")
    assert R.canary_poke(spec, ctx(), state, 1) is False
    assert serving.rollout["fraction"] == 0.05  # traffic unchanged while paused
    R.set_control(spec, ctx("ctl", "alice"), "resume")
    assert R.canary_poke(spec, ctx(), state, 1) is False  # now it steps up
    assert serving.rollout["fraction"] == 1.0


def test_the_champion_moved_by_hand_stops_the_rollout_and_says_why(model):
    name, client, serving = model
    spec = spec_of(name)
    state = R.start(spec, ctx())
    client.set_registered_model_alias(name, C.ALIAS_CHAMPION, "1")  # the MLflow UI
    with pytest.raises(R.RolloutStopped, match="the champion alias moved from v2 to v1"):
        R.canary_poke(spec, ctx(), state, 0)
    assert serving.rollout is None and R.read_state(client, name)[0] is None
    assert ledger(client, name)[-1] == ("aborted", "2", "3")


def test_a_rollout_that_ends_without_a_verdict_says_so_in_the_ledger(model):
    """A task failing for good (or a week-long wait timing out) ended the run with only
    rollout_started in the ledger: `retrainer history` now says it stopped, and why."""
    name, client, serving = model
    spec = spec_of(name)
    state = R.start(spec, ctx())
    R.end(spec, ctx(), state)  # end_rollout after canary_step_1 failed
    action, frm, to = ledger(client, name)[-1]
    assert (action, frm, to) == ("aborted", "2", "3")
    assert "ended without a verdict" in history(client, name)[0].reason
    assert "ended without a verdict" in client.get_model_version(name, "3").tags["retrainer.deploy"]
    assert serving.rollout is None and R.read_state(client, name)[0] is None


def test_a_promoted_rollout_ends_with_nothing_more_to_say(model):
    name, client, serving = model
    spec, state = promoted_after_one_step(name, serving)
    R.end(spec, ctx(), state)
    assert [a for a, _, _ in ledger(client, name)] == ["rollout_started", "canary_step", "promote"]


def test_serving_restarting_before_the_shadow_decision_is_said_so(model):
    name, client, serving = model
    spec = spec_of(name, strategy="shadow", min_rows=10)
    state = R.start(spec, ctx())
    serving.stats = {"mirrored": {"rows": 5000, "agree": 4990}, "challenger": {"requests": 5000}}
    assert R.shadow_poke(spec, ctx(), state) is True
    serving.restart()
    with pytest.raises(R.RolloutStopped, match="serving lost the shadow of v3 just before"):
        R.shadow_decide(spec, ctx(), state)
    assert ledger(client, name)[-1] == ("aborted", "2", "3")
