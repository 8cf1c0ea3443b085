"""The serving API through real HTTP on loopback: formats, bad input, feedback, metrics, reload."""

import math
import threading
import time
from pathlib import Path

import httpx
import pytest

# Imported at collection: at run time `conftest` may name another folder's conftest.
from conftest import credit_rows, register_version, start_server, stop_server
from retrainer.config.secrets import serving_admin_token

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "credit_srv"


@pytest.fixture(scope="module")
def rows(serving):
    return credit_rows(serving, MODEL, 40)


def test_every_payload_format_gives_the_same_answer(serving, rows):
    cols = list(rows[0])
    few = rows[:5]
    payloads = {
        "rows": {"rows": few},
        "dataframe_split": {
            "dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in few]}
        },
        "dataframe_records": {"dataframe_records": few},
        "instances": {"instances": few},
        "inputs": {"inputs": {c: [r[c] for r in few] for c in cols}},
    }
    answers = {}
    for name, body in payloads.items():
        resp = httpx.post(f"{serving}/models/{MODEL}/predict", json=body)
        assert resp.status_code == 200, (name, resp.text)
        data = resp.json()
        assert (
            data["model_version"]
            and data["request_id"]
            and resp.headers["x-request-id"] == data["request_id"]
        )
        answers[name] = [(p["label"], round(p["probability"], 12)) for p in data["predictions"]]
        inv = httpx.post(f"{serving}/invocations", json=body)  # MLflow's protocol
        assert inv.status_code == 200, (name, inv.text)
        assert inv.json()["predictions"] == [a[0] for a in answers[name]]
    assert len({tuple(a) for a in answers.values()}) == 1
    for p in httpx.post(f"{serving}/models/{MODEL}/predict", json={"rows": few}).json()[
        "predictions"
    ]:
        assert math.isclose(sum(p["probabilities"].values()), 1.0) and p["label"] in ("good", "bad")


@pytest.mark.parametrize(
    ("mutate", "status", "message"),
    [
        (lambda r: r.pop("Age"), 422, "missing column 'Age'"),
        (lambda r: r.update(Shoe_size=42), 422, "unknown column(s) ['Shoe_size']"),
        (lambda r: r.update(Age="thirty"), 422, "column 'Age' expects a number"),
        (lambda r: r.update(Home=3), 422, "column 'Home' expects a string"),
        (
            lambda r: r.update(Age=None),
            422,
            "column 'Age' is null/NaN, which this model does not allow",
        ),
    ],
)
def test_bad_rows_are_4xx_naming_the_field(serving, rows, mutate, status, message):
    row = dict(rows[0])
    mutate(row)
    resp = httpx.post(f"{serving}/models/{MODEL}/predict", json={"rows": [row]})
    assert resp.status_code == status and message in resp.json()["error"]
    assert httpx.get(f"{serving}/health").status_code == 200


def test_null_allowed_wherever_the_spec_allows_it(serving, rows):
    # Income has many missing values in training; Marital and Job one each, which the training
    # split may or may not hold: the spec's max_null_fraction (0.2) decides, not the sample.
    row = dict(rows[0], Income=None, Marital=None, Job=None)
    resp = httpx.post(f"{serving}/models/{MODEL}/predict", json={"rows": [row]})
    assert resp.status_code == 200, resp.text


def test_malformed_and_oversized_requests(serving, rows):
    post = lambda **kw: httpx.post(f"{serving}/models/{MODEL}/predict", **kw)  # noqa: E731
    r = post(content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = post(json={"rows": rows[:1] * 1001})
    assert r.status_code == 422 and "too many rows: 1001 > 1000" in r.json()["error"]
    r = post(content=b"x" * 2_100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = post(json={"something": []})
    assert r.status_code == 422 and "expected exactly one of the keys" in r.json()["error"]
    r = post(json={"rows": []})
    assert r.status_code == 422
    assert httpx.post(f"{serving}/models/nope/predict", json={"rows": rows[:1]}).status_code == 404
    assert httpx.get(f"{serving}/health").json() == {"status": "ok"}


def admin_headers():
    from retrainer.config.settings import get_settings

    return {"Authorization": f"Bearer {serving_admin_token(get_settings())}"}


def test_feedback_and_inference_log_land_as_parquet(serving, rows):
    import pyarrow.dataset as ds

    from retrainer.config.settings import get_settings
    from retrainer.stores import storage

    settings = get_settings()
    resp = httpx.post(
        f"{serving}/models/{MODEL}/predict",
        json={"rows": rows[:3]},
        headers={"x-request-id": "req-log-1"},
    )
    rid = resp.json()["request_id"]  # the server's id; the client's is kept beside it
    assert rid != "req-log-1" and resp.headers["x-client-request-id"] == "req-log-1"
    one = httpx.post(
        f"{serving}/models/{MODEL}/feedback", json={"request_id": rid, "row": 0, "label": "bad"}
    )
    assert one.json() == {"accepted": 1, "logged": 1, "duplicates": 0}
    batch = [{"request_id": rid, "row": i, "label": "good"} for i in (1, 2)]
    assert httpx.post(f"{serving}/models/{MODEL}/feedback", json={"labels": batch}).json() == {
        "accepted": 2,
        "logged": 2,
        "duplicates": 0,
    }
    bad = httpx.post(f"{serving}/models/{MODEL}/feedback", json={"label": "bad"})
    assert bad.status_code == 422 and "request_id" in bad.json()["error"]

    flushed = httpx.post(f"{serving}/flush", headers=admin_headers(), timeout=60).json()
    assert flushed["inference_rows_total"] >= 3 and flushed["feedback_rows_total"] >= 3
    assert flushed["pending_segments"] == 0
    log_root = f"{settings.inference_log_root}/{MODEL}"
    fb_root = f"{settings.feedback_root}/{MODEL}"
    log = storage.read_table(log_root)
    fb = storage.read_table(fb_root)
    mine = log[log["_request_id"] == rid].sort_values("_row")
    assert list(mine["_row"]) == [0, 1, 2] and set(mine["_client_request_id"]) == {"req-log-1"}
    assert list(mine["Age"]) == [r["Age"] for r in rows[:3]]
    assert set(mine["_prediction"]) <= {"good", "bad"} and mine["_model_version"].notna().all()
    assert sorted(fb[fb["_request_id"] == rid]["_label"]) == ["bad", "good", "good"]
    # each label says when its request was answered (from the id): the monitor finds the row by it
    import pandas as pd

    answered = pd.to_datetime(fb[fb["_request_id"] == rid]["_answered"], utc=True)
    logged = pd.Timestamp(mine["_ts"].iloc[0])
    assert ((logged - answered).dt.total_seconds().between(0, 2)).all(), (answered, logged)
    assert any(p.startswith("date=") for p in (p.name for p in Path(log_root).iterdir()))
    # One schema per model version: the whole folder reads as one dataset.
    for root in (log_root, fb_root):
        files = storage.list_data_files(root)
        schemas = {ds.dataset(f).schema.remove_metadata() for f in files}
        assert len(schemas) == 1, schemas


def test_metrics(serving, rows):
    httpx.post(f"{serving}/models/{MODEL}/predict", json={"rows": rows[:2]})
    text = httpx.get(f"{serving}/metrics").text
    for needle in (
        f'retrainer_requests_total{{endpoint="predict",model="{MODEL}",status="200"}}',
        f'retrainer_request_errors_total{{endpoint="predict",model="{MODEL}",reason="input"}}',
        f'retrainer_request_latency_seconds_bucket{{endpoint="predict",le="0.01",model="{MODEL}"}}',
        f'retrainer_rows_predicted_total{{model="{MODEL}"}}',
        f'retrainer_model_version{{model="{MODEL}"}}',
        f'retrainer_predictions_total{{label="good",model="{MODEL}"}}',
        "retrainer_batch_rows_bucket",
    ):
        assert needle in text, needle


def test_bearer_token(served_model, rows):
    from retrainer.config.settings import get_settings
    from testenv import free_port

    proc, url = start_server(
        get_settings(), MODEL, free_port(), {"RETRAINER_API_TOKEN": "canary-token-123"}
    )
    try:
        assert httpx.get(f"{url}/health").status_code == 200  # health stays open
        for method, path, body in (
            ("POST", f"/models/{MODEL}/predict", {"rows": rows[:1]}),
            ("POST", "/invocations", {"rows": rows[:1]}),
            ("GET", "/metrics", None),
            ("GET", "/ready", None),
            ("POST", f"/models/{MODEL}/feedback", {"request_id": "x", "label": "bad"}),
            ("POST", "/reload", {}),
        ):
            assert httpx.request(method, url + path, json=body).status_code == 401, path
            wrong = httpx.request(
                method, url + path, json=body, headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401, path
        ok = httpx.post(
            f"{url}/models/{MODEL}/predict",
            json={"rows": rows[:1]},
            headers={"Authorization": "Bearer canary-token-123"},
        )
        assert ok.status_code == 200
    finally:
        log = stop_server(proc)
    assert "canary-token-123" not in log


def test_reload_under_concurrent_load_fails_no_request(serving, rows):
    from retrainer.config.settings import get_settings

    current = httpx.get(f"{serving}/models/{MODEL}").json()["version"]
    new = register_version(MODEL, f"reload-{time.time_ns()}")
    assert new != current
    stop = threading.Event()
    seen: list[tuple[int, str, float]] = []

    def hammer():
        with httpx.Client() as client:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = client.post(f"{serving}/models/{MODEL}/predict", json={"rows": rows[:1]})
                seen.append(
                    (r.status_code, r.json().get("model_version", "?"), time.perf_counter() - t0)
                )

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    token = serving_admin_token(get_settings())
    reload = httpx.post(
        f"{serving}/reload",
        json={"model": MODEL, "version": new},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert reload.status_code == 200 and reload.json()["models"][MODEL]["serving"] == new
    statuses = [s for s, _, _ in seen]
    assert len(seen) > 100 and set(statuses) == {200}, f"{statuses.count(200)} ok of {len(seen)}"
    versions = [v for _, v, _ in seen]
    assert versions[0] == current and versions[-1] == new
    print(
        f"\n{len(seen)} requests during reload, 0 failed; slowest {max(t for *_, t in seen) * 1000:.0f} ms"
    )
    # Put the previous version back so later tests see the registry's champion.
    httpx.post(
        f"{serving}/reload",
        json={"model": MODEL},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
