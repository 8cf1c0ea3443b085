"""The deploy DAG's rollout through dag.test(), against the real registry and a real `retrainer
serve` process under live traffic: shadow then canary then promotion; a challenger that
predicts differently stopped in shadow; a canary SLO breach rolled back by itself; pause,
resume and abort from the CLI while the run waits; on_new_version. The controls' tests are in the
slow tier (`make test-all`): each rollout here takes 30-100 s on a loaded two-core machine."""

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import credit_rows, prepare_version, register_version, start_server, stop_server
from retrainer import constants as C
from retrainer.config.settings import RunContext, get_settings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
MODEL = "credit_rdag"
FAULT = {"Age": 10_000}  # the faulty challenger raises on such a row


def client():
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client(get_settings())


def alias(a):
    from retrainer.stores.registry import version_by_alias

    mv = version_by_alias(client(), MODEL, a)
    return None if mv is None else str(mv.version)


def spec(**rollout):
    from retrainer.spec import load_spec, parse_spec

    base = load_spec(get_settings().models_dir / f"{MODEL}.yaml")
    raw = base.model_dump()
    raw["deployment"]["rollout"].update(rollout)
    return parse_spec(raw)


def deploy(s, conf=None):
    from retrainer.orchestration.deploy import deploy_dag

    dr = deploy_dag(s).test(run_conf=conf or {})
    return dr, {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def ledger_since(start_ms):
    from retrainer.stores.ledger import history

    return [e for e in reversed(history(client(), MODEL)) if e.time >= start_ms]


@pytest.fixture(scope="module")
def trusted_estimators():
    saved = os.environ.get("RETRAINER_ESTIMATOR_MODULES")
    os.environ["RETRAINER_ESTIMATOR_MODULES"] = "rollout_estimators"
    yield
    if saved is None:
        os.environ.pop("RETRAINER_ESTIMATOR_MODULES", None)
    else:
        os.environ["RETRAINER_ESTIMATOR_MODULES"] = saved


@pytest.fixture(scope="module")
def server(airflow_db, trusted_estimators, tmp_path_factory):
    """v1 champion, then `retrainer serve` (able to load the faulty test estimator)."""
    from retrainer.steps import deploy as steps

    v1 = register_version(MODEL, "rdag-v1")
    steps.promote(spec(), RunContext(dag_id="test", run_id="rdag-v1"), version=v1)
    from testenv import free_port

    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path_factory.mktemp("spool")),
        "RETRAINER_ESTIMATOR_MODULES": "rollout_estimators",
    }
    proc, url = start_server(get_settings(), MODEL, free_port(), env)
    os.environ["RETRAINER_SERVING_ENDPOINT"] = url
    yield url
    os.environ.pop("RETRAINER_SERVING_ENDPOINT", None)
    log = stop_server(proc)
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def rows(server):
    return credit_rows(server, MODEL, 400)


class Traffic:
    """Clients sending 5-row requests until stopped; every answer must be a 200."""

    def __init__(self, url, rows, faulty_every=0):
        self.url, self.rows, self.faulty_every = url, rows, faulty_every
        self.stop, self.statuses = threading.Event(), []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                batch = [dict(self.rows[(i + k) % len(self.rows)]) for k in range(5)]
                if self.faulty_every and i % self.faulty_every == 0:
                    batch[0].update(FAULT)
                r = http.post(f"{self.url}/models/{MODEL}/predict", json={"rows": batch})
                self.statuses.append(r.status_code)
                i += 5
                time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def rollout_status(url):
    from retrainer.config.secrets import serving_admin_token

    headers = {"Authorization": f"Bearer {serving_admin_token(get_settings())}"}
    return httpx.get(f"{url}/models/{MODEL}/rollout", headers=headers).json()


def test_identical_challenger_goes_through_shadow_and_canary(server, rows):
    champion = alias(C.ALIAS_CHAMPION)
    new = register_version(MODEL, f"rdag-same-{time.time_ns()}")
    start = int(time.time() * 1000)
    with Traffic(server, rows) as traffic:
        dr, states = deploy(spec(), {"version": new, "origin": "retrain"})
    assert str(dr.state) == "success", states
    assert set(traffic.statuses) == {200}
    actions = [(e.action, e.to_version) for e in ledger_since(start)]
    assert [a for a, _ in actions] == [
        "rollout_started",
        "shadow_passed",
        "canary_step",
        "canary_step",
        "promote",
    ], actions
    assert {v for _, v in actions} == {new}
    passed = next(e for e in ledger_since(start) if e.action == "shadow_passed")
    assert float(passed.metrics["agreement"]) == 1.0
    assert alias(C.ALIAS_CHAMPION) == new and alias(C.ALIAS_PREVIOUS) == champion
    assert httpx.get(f"{server}/models/{MODEL}").json()["version"] == new
    assert rollout_status(server)["mode"] == "none"
    tags = client().get_model_version(MODEL, new).tags
    assert (
        tags["retrainer.rollout.shadow"] == "pass"
        and tags["retrainer.rollout.canary_1"] == "promote"
    )


def test_challenger_without_features_is_stopped_in_shadow_with_the_disagreement_named(server, rows):
    # Trained without Seniority, Income and Amount (their columns blanked), with the champion's
    # signature; a lenient gate lets it register.
    gate = {"primary_metric": "roc_auc", "comparison": "non_inferiority", "margin": 0.5}
    champion = alias(C.ALIAS_CHAMPION)
    weak = register_version(
        MODEL,
        f"rdag-blind-{time.time_ns()}",
        spec_updates={"gate": gate},
        estimator="rollout_estimators.BlindClassifier",
        params={"blind": [0, 4, 7]},
    )
    start = int(time.time() * 1000)
    with Traffic(server, rows):
        dr, states = deploy(spec(), {"version": weak, "origin": "retrain"})
    assert str(dr.state) == "failed"
    assert states["decide_shadow"] == "failed" and states["promote_champion"] == "upstream_failed"
    assert states["end_rollout"] == "success", states
    stopped = [e for e in ledger_since(start) if e.action == "shadow_stopped"]
    assert len(stopped) == 1 and "disagreements by class" in stopped[0].reason, stopped
    assert "good->bad" in stopped[0].reason or "bad->good" in stopped[0].reason
    assert float(stopped[0].metrics["agreement"]) < 0.95
    assert float(stopped[0].metrics["error_rate"]) == 0.0  # it was judged on what it predicted
    assert alias(C.ALIAS_CHAMPION) == champion
    assert rollout_status(server)["mode"] == "none"
    assert httpx.get(f"{server}/models/{MODEL}").json()["version"] == champion


def test_canary_slo_breach_rolls_back_within_two_checks(server, rows):
    champion = alias(C.ALIAS_CHAMPION)
    faulty = register_version(
        MODEL,
        f"rdag-faulty-{time.time_ns()}",
        estimator="rollout_estimators.FaultyClassifier",
        params={"raise_above": 50.0, "max_iter": 200, "learning_rate": 0.05},
    )
    s = spec(strategy="canary", bake_time="60s")
    start = int(time.time() * 1000)
    with Traffic(server, rows, faulty_every=20) as traffic:
        dr, states = deploy(s, {"version": faulty, "origin": "retrain"})
    assert str(dr.state) == "failed" and states["canary_step_1"] == "failed", states
    assert set(traffic.statuses) == {200}  # the challenger's faults never reached a client
    entries = ledger_since(start)
    step = next(e for e in entries if e.action == "canary_step")
    back = next(e for e in entries if e.action == "rolled_back")
    assert "error_rate" in back.reason and float(back.metrics["error_rate"]) > 0.01
    # the breach took the challenger out within two check intervals of the step's start
    assert back.time - step.time <= 2 * s.deployment.rollout.check_seconds * 1000, (
        back.time - step.time
    )
    assert rollout_status(server)["mode"] == "none" and alias(C.ALIAS_CHAMPION) == champion
    assert (
        client().get_model_version(MODEL, faulty).tags["retrainer.deploy"].startswith("rolled_back")
    )


class controller:  # noqa: N801 (used like a function)
    """A thread that waits until `when()` then runs `actions` (callables) in order; `join`
    re-raises what failed in it."""

    def __init__(self, when, *actions):
        self.when, self.actions, self.errors = when, actions, []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def ready(self):
        try:
            return self.when()
        except httpx.HTTPError:
            return False

    def run(self):
        try:
            deadline = time.monotonic() + 120
            while not self.ready():
                if time.monotonic() > deadline:
                    raise TimeoutError("the rollout never reached the state to act in")
                time.sleep(0.2)
            for act in self.actions:
                act()
        except Exception as exc:
            self.errors.append(exc)

    def join(self, timeout):
        self.thread.join(timeout)
        if self.errors:
            raise self.errors[0]


def control(action):
    from retrainer.steps.rollout import set_control

    return lambda: set_control(
        spec(), RunContext(dag_id="cli", run_id="t", triggered_by="cli:test"), action
    )


@pytest.mark.slow  # the people-in-charge controls: slow tier, to keep `make test` short
def test_pause_holds_the_step_and_resume_lets_it_finish(server, rows):
    new = register_version(MODEL, f"rdag-pause-{time.time_ns()}")
    s = spec(strategy="canary")
    start = int(time.time() * 1000)
    in_canary = lambda: rollout_status(server)["mode"] == "canary"  # noqa: E731
    with Traffic(server, rows):
        ctl = controller(in_canary, control("pause"), lambda: time.sleep(12), control("resume"))
        dr, states = deploy(s, {"version": new, "origin": "retrain"})
        ctl.join(5)
    assert str(dr.state) == "success", states
    entries = ledger_since(start)
    actions = [e.action for e in entries]
    assert actions.index("paused") < actions.index("resumed"), actions
    resumed = next(e for e in entries if e.action == "resumed")
    steps = [e for e in entries if e.action == "canary_step"]
    # the bake time (3 s) ran out during the 12 s pause: the next step waited for the resume
    assert len(steps) == 2 and steps[1].time > resumed.time
    assert alias(C.ALIAS_CHAMPION) == new


@pytest.mark.slow  # the people-in-charge controls: slow tier, to keep `make test` short
def test_abort_takes_the_challenger_out_at_once_while_the_run_waits(server, rows):
    champion = alias(C.ALIAS_CHAMPION)
    new = register_version(MODEL, f"rdag-abort-{time.time_ns()}")
    s = spec(strategy="canary", bake_time="30s")
    start = int(time.time() * 1000)
    seen = {}

    def abort_and_look():  # through the command line, as a person would
        from typer.testing import CliRunner

        from retrainer.cli import app

        result = CliRunner().invoke(app, ["rollout", "abort", MODEL])
        seen["cli"] = (result.exit_code, result.output)
        seen["mode"] = rollout_status(server)["mode"]
        status = CliRunner().invoke(app, ["rollout", "status", MODEL])
        seen["status"] = status.output

    in_canary = lambda: rollout_status(server)["mode"] == "canary"  # noqa: E731
    with Traffic(server, rows):
        ctl = controller(in_canary, abort_and_look)
        dr, states = deploy(s, {"version": new, "origin": "retrain"})
        ctl.join(5)
    assert seen["cli"][0] == 0 and "abort recorded" in seen["cli"][1], seen["cli"]
    assert seen["mode"] == "none"  # at once, before the waiting task noticed
    assert '"mode": "none"' in seen["status"]
    assert str(dr.state) == "failed" and states["canary_step_1"] == "failed", states
    assert "aborted" in [e.action for e in ledger_since(start)]
    assert alias(C.ALIAS_CHAMPION) == champion


@pytest.mark.slow  # the people-in-charge controls: slow tier, to keep `make test` short
@pytest.mark.parametrize("policy", ["replace", "wait"])
def test_a_newer_version_during_a_rollout(server, rows, policy):
    champion = alias(C.ALIAS_CHAMPION)
    first = register_version(MODEL, f"rdag-{policy}-a-{time.time_ns()}")
    s = spec(strategy="canary", bake_time="8s", on_new_version=policy)
    start = int(time.time() * 1000)
    newer = {}
    # trained before the rollout starts: under load, training it inside the 8-second canary
    # step let the step end first; only its registration (the challenger alias) comes mid-step
    register = prepare_version(MODEL, f"rdag-{policy}-b-{time.time_ns()}")

    def register_newer():
        newer["v"] = register()

    in_canary = lambda: rollout_status(server)["mode"] == "canary"  # noqa: E731
    with Traffic(server, rows):
        ctl = controller(in_canary, register_newer)
        dr, states = deploy(s, {"version": first, "origin": "retrain"})
        ctl.join(60)
    assert alias(C.ALIAS_CHALLENGER) == newer["v"]
    if policy == "replace":
        # the rollout stops in favour of the newer version (whose own deploy run comes next)
        assert str(dr.state) == "success" and states["promote_champion"] == "skipped", states
        aborted = next(e for e in ledger_since(start) if e.action == "aborted")
        assert f"replaced by v{newer['v']}" in aborted.reason
        assert alias(C.ALIAS_CHAMPION) == champion
    else:
        # wait: the running rollout finishes with the version it started with
        assert str(dr.state) == "success", states
        assert alias(C.ALIAS_CHAMPION) == first
    assert rollout_status(server)["mode"] == "none"
