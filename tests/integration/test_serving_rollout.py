"""Shadow and canary in serving, through real HTTP: a champion and a faulty challenger (a real
registered MLflow version that raises on rows far outside its training data and is slow), under
concurrent clients. Clients never see the challenger's faults, the canary split follows the
contract's hash rule, every answered request is logged exactly once, and the shadow's agreement
is what a direct computation gives."""

from __future__ import annotations

import asyncio
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

# Imported at collection: at run time `conftest` may name another folder's conftest.
from conftest import credit_rows, register_version, start_server, stop_server
from retrainer.serving.rollout import routed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
MODEL = "credit_roll"
CLIENTS = 24
FAULT = {"Age": 10_000}  # far outside the training data: the challenger raises on such a row


@pytest.fixture(scope="module")
def versions(airflow_db):
    """v1: a weaker champion; v2: the faulty, slow challenger (better, so the gate registers it)."""
    saved = os.environ.get("RETRAINER_ESTIMATOR_MODULES")
    os.environ["RETRAINER_ESTIMATOR_MODULES"] = "rollout_estimators"
    try:
        v1 = register_version(
            MODEL, "roll-v1", params={"max_iter": 3, "learning_rate": 0.05, "random_state": 42}
        )
        v2 = register_version(
            MODEL,
            "roll-v2",
            estimator="rollout_estimators.FaultyClassifier",
            params={"raise_above": 50.0, "delay": 0.02, "max_iter": 200, "learning_rate": 0.05},
        )
    finally:
        if saved is None:
            os.environ.pop("RETRAINER_ESTIMATOR_MODULES", None)
        else:
            os.environ["RETRAINER_ESTIMATOR_MODULES"] = saved
    return str(v1), str(v2)


@pytest.fixture(scope="module")
def server(versions, tmp_path_factory):
    from retrainer.config.settings import get_settings
    from testenv import free_port

    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path_factory.mktemp("spool")),
        "RETRAINER_SERVING_SHADOW_QUEUE_ROWS": "64",
    }
    proc, url = start_server(get_settings(), MODEL, free_port(), env)
    yield url
    log = stop_server(proc)
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def rows(server):
    return credit_rows(server, MODEL, 120)


def admin():
    from retrainer.config.secrets import serving_admin_token
    from retrainer.config.settings import get_settings

    return {"Authorization": f"Bearer {serving_admin_token(get_settings())}"}


def rollout(url: str, method: str = "GET", body=None) -> httpx.Response:
    return httpx.request(method, f"{url}/models/{MODEL}/rollout", json=body, headers=admin())


def load(url: str, bodies: list[dict], clients: int = CLIENTS) -> list[httpx.Response]:
    """Every body POSTed to /predict by `clients` concurrent clients; the answers in order."""

    async def run() -> list[httpx.Response]:
        answers: list[httpx.Response | None] = [None] * len(bodies)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)

        async def client() -> None:
            async with httpx.AsyncClient(timeout=60) as http:
                while not queue.empty():
                    i = queue.get_nowait()
                    answers[i] = await http.post(f"{url}/models/{MODEL}/predict", json=bodies[i])

        await asyncio.gather(*(client() for _ in range(clients)))
        return [a for a in answers if a is not None]

    return asyncio.run(run())


def workload(rows: list[dict], repeat: int = 4) -> tuple[list[dict], set[int]]:
    """Single-row requests, every seventh a row the challenger raises on."""
    bodies, faulty = [], set()
    for i in range(len(rows) * repeat):
        row = dict(rows[i % len(rows)])
        if i % 7 == 3:
            row.update(FAULT)
            faulty.add(i)
        bodies.append({"rows": [row]})
    return bodies, faulty


def champion_answers(url: str, bodies: list[dict]) -> list[str]:
    """What the champion alone answers (no rollout in progress)."""
    assert rollout(url).json()["mode"] == "none"
    return [r.json()["predictions"][0]["label"] for r in load(url, bodies, clients=4)]


def test_hostile_rollout_bodies_are_clear_4xx(server, versions):
    good = {"challenger": versions[1], "mode": "shadow", "fraction": 0.5, "key": None}
    url = f"{server}/models/{MODEL}/rollout"
    assert httpx.put(url, json=good).status_code == 401
    assert httpx.get(url).status_code == 401
    assert httpx.delete(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    cases = [
        ([], 422, "expected {"),
        ("shadow", 422, "expected {"),
        ({**good, "extra": 1}, 422, "unexpected keys ['extra']"),
        ({"challenger": versions[1], "mode": "shadow"}, 422, "missing ['fraction']"),
        ({**good, "mode": "blue"}, 422, "mode must be one of ['shadow', 'canary']"),
        ({**good, "fraction": 0}, 422, "fraction must be a number in (0, 1]"),
        ({**good, "fraction": 1.5}, 422, "fraction must be a number in (0, 1]"),
        ({**good, "fraction": "0.5"}, 422, "fraction must be a number in (0, 1]"),
        ({**good, "fraction": True}, 422, "fraction must be a number in (0, 1]"),
        ({**good, "challenger": None}, 422, "challenger must be a version number or an alias"),
        ({**good, "challenger": "../x"}, 422, "challenger must be a version number or an alias"),
        ({**good, "key": 3}, 422, "key must be a column name or null"),
        ({**good, "key": "Shoe_size"}, 422, "'Shoe_size' is not a column of the champion"),
        ({**good, "challenger": "99"}, 404, "has no version or alias '99'"),
        ({**good, "challenger": "nope"}, 404, "has no version or alias 'nope'"),
        ({**good, "challenger": "latest"}, 404, "'latest' is not an alias"),
    ]
    for body, status, message in cases:
        r = rollout(server, "PUT", body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
    r = httpx.put(url, content=b"{", headers={**admin(), "content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.put(url, content=b"{}", headers={**admin(), "content-type": "text/plain"})
    assert r.status_code == 415
    other = httpx.put(f"{server}/models/nope/rollout", json=good, headers=admin())
    assert other.status_code == 404 and "no model 'nope'" in other.json()["error"]
    status = rollout(server).json()
    assert status["mode"] == "none" and status["challenger"] is None
    assert status["champion"] == versions[0] and status["stats"]["mirrored"]["rows"] == 0


def test_shadow_under_load_answers_with_the_champion_and_measures_agreement(server, versions, rows):
    from retrainer.config.settings import get_settings
    from retrainer.serving.model import load_version
    from retrainer.steps.rollout_log import read_shadow

    v1, v2 = versions
    bodies, faulty = workload(rows)
    expected = champion_answers(server, bodies)
    since = datetime.now(UTC)
    put = rollout(server, "PUT", {"challenger": "challenger", "mode": "shadow", "fraction": 1.0})
    assert put.status_code == 200, put.text
    assert put.json()["challenger"] == v2 and put.json()["mode"] == "shadow"
    answers = load(server, bodies)
    assert [a.status_code for a in answers] == [200] * len(bodies)  # zero client errors
    assert {a.headers["x-model-version"] for a in answers} == {v1}
    assert [a.json()["predictions"][0]["label"] for a in answers] == expected
    stats = wait_for_shadow(server, len(bodies))
    mirrored, challenger = stats["mirrored"], stats["challenger"]
    # Every request was mirrored, dropped (the queue holds 64 rows; the challenger is slow) or
    # failed by the challenger (the faulty rows), and nothing else.
    assert mirrored["rows"] + mirrored["dropped"] + challenger["errors"] == len(bodies)
    assert 0 < challenger["errors"] <= len(faulty)
    assert stats["champion"]["requests"] == len(bodies) and challenger["predict_p99_ms"] >= 20
    # The shadow's process timed both versions on the same rows: the sleeping challenger shows.
    paired = stats["paired_latency"]
    assert paired["calls"] >= 1 and paired["challenger_p99_ms"] >= 20, paired
    assert paired["champion_p99_ms"] < paired["challenger_p99_ms"], paired
    flushed = httpx.post(f"{server}/flush", headers=admin()).json()
    assert flushed["shadow_rows_total"] >= mirrored["rows"]
    shadow = read_shadow(get_settings(), MODEL, since)
    assert len(shadow) == mirrored["rows"] == challenger["rows"]
    assert set(shadow["_champion_version"]) == {v1} and set(shadow["_challenger_version"]) == {v2}
    # The champion's side is what the clients got; the challenger's is what v2 predicts.
    by_id = {
        a.json()["request_id"]: (i, a.json()["predictions"][0]["label"])
        for i, a in enumerate(answers)
    }
    pairs = zip(shadow["_request_id"], shadow["_champion_prediction"], strict=True)
    assert all(by_id[rid][1] == label for rid, label in pairs)
    assert not {by_id[rid][0] for rid in shadow["_request_id"]} & faulty
    direct, _ = load_version(MODEL, v2, get_settings().tracking_uri).predict(
        [bodies[by_id[rid][0]]["rows"][0] for rid in shadow["_request_id"]]
    )
    assert list(shadow["_prediction"]) == direct
    agree = sum(a == b for a, b in zip(shadow["_champion_prediction"], direct, strict=True))
    assert mirrored["agree"] == agree < len(shadow)  # v1 is weaker: they disagree somewhere
    assert sum(mirrored["disagree_by_class"].values()) == len(shadow) - agree
    final = rollout(server, "DELETE")
    assert final.json()["mode"] == "shadow" and final.json()["stats"]["mirrored"] == mirrored
    assert rollout(server).json()["mode"] == "none"


def wait_for_shadow(url: str, requests: int) -> dict:
    """The step's stats once the shadow has dealt with every mirrored request."""
    import time

    deadline = time.monotonic() + 60
    while True:
        stats = rollout(url).json()["stats"]
        m, c = stats["mirrored"], stats["challenger"]
        if m["rows"] + m["dropped"] + c["errors"] >= requests or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def test_canary_split_fallbacks_and_each_request_logged_once(server, versions, rows):
    from retrainer.config.settings import get_settings
    from retrainer.steps.monitor.window import champion_rows, read_log

    v1, v2 = versions
    put = rollout(server, "PUT", {"challenger": v2, "mode": "canary", "fraction": 0.5})
    assert put.status_code == 200 and put.json()["stats"]["challenger"]["requests"] == 0
    bodies, faulty = workload(rows, repeat=3)
    answers = load(server, bodies)
    assert [a.status_code for a in answers] == [200] * len(bodies)  # zero client errors
    to_challenger = fallbacks = 0
    for i, a in enumerate(answers):
        rid = a.json()["request_id"]
        routed_there = routed(rid, 0.5)  # key null: the contract's hash of the request id
        answered_by = a.headers["x-model-version"]
        assert answered_by == (v2 if routed_there and i not in faulty else v1), i
        to_challenger += answered_by == v2
        fallbacks += routed_there and i in faulty
    stats = rollout(server).json()["stats"]
    assert 0 < to_challenger < len(bodies) and fallbacks > 0
    assert stats["challenger"]["requests"] == to_challenger
    assert stats["challenger"]["fallbacks"] == stats["challenger"]["errors"] == fallbacks
    assert stats["champion"]["requests"] == len(bodies) - to_challenger
    httpx.post(f"{server}/flush", headers=admin())
    logged = read_log(get_settings().inference_log_root, MODEL, None, datetime.now(UTC))
    answered = {a.json()["request_id"]: a.headers["x-model-version"] for a in answers}
    mine = logged[logged["_request_id"].isin(answered)]
    assert len(mine) == len(answered) == mine["_request_id"].nunique()  # each exactly once
    for r in mine.to_dict("records"):
        assert r["_model_version"] == answered[r["_request_id"]]
        assert r["_role"] == ("challenger" if r["_model_version"] == v2 else "champion")
    # The monitor's window sees the champion's answers only.
    assert set(champion_rows(mine)["_model_version"]) == {v1}
    assert len(champion_rows(mine)) == len(bodies) - to_challenger
    rollout(server, "DELETE")


def test_canary_split_is_deterministic_by_key(server, versions, rows):
    v1, v2 = versions
    ages = sorted({r["Age"] for r in rows})
    put = rollout(
        server, "PUT", {"challenger": v2, "mode": "canary", "fraction": 0.3, "key": "Age"}
    )
    assert put.status_code == 200 and put.json()["key"] == "Age"
    bodies = [{"rows": [dict(rows[0], Age=age)]} for age in ages for _ in range(3)]
    first = load(server, bodies, clients=8)
    seen: dict[int, set[str]] = {}
    for body, a in zip(bodies, first, strict=True):
        seen.setdefault(body["rows"][0]["Age"], set()).add(a.headers["x-model-version"])
    assert all(len(v) == 1 for v in seen.values())  # one key value sees one model
    assert {age for age, v in seen.items() if v == {v2}} == {a for a in ages if routed(str(a), 0.3)}
    # A larger fraction only adds keys, and a new step's stats start from zero.
    put = rollout(
        server, "PUT", {"challenger": v2, "mode": "canary", "fraction": 0.6, "key": "Age"}
    )
    assert put.json()["stats"]["challenger"]["requests"] == 0
    second = load(server, bodies, clients=8)
    before = {
        b["rows"][0]["Age"]
        for b, a in zip(bodies, first, strict=True)
        if a.headers["x-model-version"] == v2
    }
    after = {
        b["rows"][0]["Age"]
        for b, a in zip(bodies, second, strict=True)
        if a.headers["x-model-version"] == v2
    }
    assert before < after
    rollout(server, "DELETE")


def test_metrics_per_role_with_bounded_labels(server, versions, rows):
    v1, v2 = versions
    rollout(server, "PUT", {"challenger": v2, "mode": "shadow", "fraction": 1.0})
    load(server, [{"rows": rows[:5]}] * 10, clients=4)
    # More rows than the shadow's queue holds (64 here): dropped and counted, never waited for.
    big = httpx.post(f"{server}/models/{MODEL}/predict", json={"rows": rows[:100]})
    assert big.status_code == 200 and big.headers["x-model-version"] == v1
    stats = wait_for_shadow(server, 110)  # some of the 50 small rows scored, the 100 dropped
    assert stats["mirrored"]["dropped"] >= 100
    text = httpx.get(f"{server}/metrics").text
    rollout(server, "DELETE")

    def value(series: str) -> float:
        m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
        assert m, series
        return float(m.group(1))

    for role in ("champion", "challenger"):
        labels = f'{{model="{MODEL}",role="{role}"}}'
        assert value(f"retrainer_predict_cpu_seconds_total{labels}") > 0
        assert value(f"retrainer_model_loaded_bytes{labels}") > 10_000
        assert value(f"retrainer_role_rows_total{labels}") > 0
    assert value(f'retrainer_model_role_version{{model="{MODEL}",role="challenger"}}') == float(v2)
    assert value(f'retrainer_shadow_rows_total{{model="{MODEL}",outcome="mirrored"}}') > 0
    assert value(f'retrainer_shadow_rows_total{{model="{MODEL}",outcome="dropped"}}') >= 100
    assert f'retrainer_canary_fallbacks_total{{model="{MODEL}"}}' in text
    roles = set(re.findall(r'role="([^"]*)"', text))
    outcomes = set(re.findall(r'retrainer_shadow_rows_total\{[^}]*outcome="([^"]*)"', text))
    assert roles == {"champion", "challenger"}
    assert outcomes <= {"mirrored", "dropped", "agree", "disagree"}
    assert "version=" not in text and "request_id" not in text
    # Once the rollout ended, the challenger's info series are gone.
    after = httpx.get(f"{server}/metrics").text
    assert f'retrainer_model_role_version{{model="{MODEL}",role="challenger"}}' not in after


def test_promotion_reloads_the_challenger_then_ends_the_rollout(server, versions, rows):
    v1, v2 = versions
    rollout(server, "PUT", {"challenger": v2, "mode": "canary", "fraction": 0.05})
    reload = httpx.post(f"{server}/reload", json={"model": MODEL, "version": v2}, headers=admin())
    assert reload.status_code == 200 and reload.json()["models"][MODEL]["serving"] == v2
    final = rollout(server, "DELETE").json()
    assert final["mode"] == "canary" and final["champion"] == v2
    answers = load(server, [{"rows": rows[:2]}] * 20, clients=4)
    assert {a.headers["x-model-version"] for a in answers} == {v2}
    assert rollout(server, "DELETE").json()["mode"] == "none"  # idempotent


def test_a_killed_server_leaves_no_child_process(versions, rows, tmp_path):
    """The shadow's process and the logs' compaction processes go with a SIGKILLed server (a
    benchmark once left a shadow's worker waiting on its queue for good)."""
    import signal
    import time

    import psutil

    from retrainer.config.settings import get_settings
    from testenv import free_port

    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path / "spool"),
    }
    proc, url = start_server(get_settings(), MODEL, free_port(), env)
    try:
        put = rollout(url, "PUT", {"challenger": versions[0], "mode": "shadow", "fraction": 1.0})
        assert put.status_code == 200, put.text
        load(url, [{"rows": [r]} for r in rows[:40]], clients=4)
        deadline = time.monotonic() + 60  # the shadow's process is spawned at the first mirror
        while rollout(url).json()["stats"]["mirrored"]["rows"] < 40:
            assert time.monotonic() < deadline, rollout(url).json()
            time.sleep(0.2)
        httpx.post(f"{url}/flush", headers=admin()).raise_for_status()  # compaction processes
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2, children
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, [(p.pid, p.cmdline()[-3:]) for p in alive]


@pytest.mark.slow  # a version and a server of its own
def test_a_hung_challenger_never_holds_a_canary_request(versions, rows, tmp_path):
    """A challenger whose predict hangs: past RETRAINER_SERVING_CHALLENGER_SECONDS the champion
    answers, it counts as the challenger's error, the request is logged once (as the
    champion's), and the rollout can still be ended (requests waited for ever)."""
    from retrainer.config.settings import get_settings
    from retrainer.steps.monitor.window import read_log
    from testenv import free_port

    v1, _ = versions
    os.environ["RETRAINER_ESTIMATOR_MODULES"] = "rollout_estimators"
    try:
        hung = str(
            register_version(
                MODEL,
                "roll-hang",
                estimator="rollout_estimators.FaultyClassifier",
                params={"raise_above": 1e12, "hang_above": 1000.0, "max_iter": 200},
            )
        )
    finally:
        os.environ.pop("RETRAINER_ESTIMATOR_MODULES", None)
    env = {
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path / "spool"),
        "RETRAINER_SERVING_CHALLENGER_SECONDS": "1",
    }
    proc, url = start_server(get_settings(), MODEL, free_port(), env)
    try:
        put = rollout(url, "PUT", {"challenger": hung, "mode": "canary", "fraction": 1.0})
        assert put.status_code == 200, put.text
        row = dict(rows[0], Age=1_000_000)  # far beyond hang_above once scaled
        answers = load(url, [{"rows": [row]}] * 3, clients=3)
        assert [a.status_code for a in answers] == [200] * 3
        assert {a.headers["x-model-version"] for a in answers} == {v1}
        stats = rollout(url).json()["stats"]["challenger"]
        assert stats["errors"] == stats["fallbacks"] == 3
        ok = httpx.post(f"{url}/models/{MODEL}/predict", json={"rows": [rows[1]]}, timeout=30)
        assert ok.status_code == 200  # the challenger's executor is still held by the hang
        assert rollout(url, "DELETE").status_code == 200
        httpx.post(f"{url}/flush", headers=admin(), timeout=60)
        logged = read_log(get_settings().inference_log_root, MODEL, None, datetime.now(UTC))
        ids = [a.json()["request_id"] for a in answers]
        mine = logged[logged["_request_id"].isin(ids)]
        assert len(mine) == 3 and set(mine["_model_version"]) == {v1}
    finally:
        stop_server(proc)
