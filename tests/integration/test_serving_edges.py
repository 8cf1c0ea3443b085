"""Hostile and careless input at the serving API's edge, through real HTTP: every case a 4xx."""

import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

# Imported at collection: at run time `conftest` may name another folder's conftest.
from conftest import credit_rows, start_server, stop_server
from retrainer.config.secrets import serving_admin_token

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "credit_srv"
TOKEN = "edge-token-456"


@pytest.fixture(scope="module")
def rows(serving):
    return credit_rows(serving, MODEL, 10)


@pytest.fixture(scope="module")
def guarded(served_model):
    """A second server with RETRAINER_API_TOKEN set."""
    from retrainer.config.settings import get_settings
    from testenv import free_port

    proc, url = start_server(get_settings(), MODEL, free_port(), {"RETRAINER_API_TOKEN": TOKEN})
    yield url
    stop_server(proc)


def admin():
    from retrainer.config.settings import get_settings

    return {"Authorization": f"Bearer {serving_admin_token(get_settings())}"}


def predict(url, body, **kw):
    return httpx.post(f"{url}/models/{MODEL}/predict", json=body, **kw)


def test_an_integer_that_does_not_fit_int64_is_refused_naming_the_field(serving, rows):
    r = predict(serving, {"rows": [dict(rows[0], Age=9223372036854775808)]})
    assert r.status_code == 422 and "'Age'" in r.json()["error"] and "64-bit" in r.json()["error"]


def test_an_age_of_140_is_a_real_request_not_a_validation_failure(serving, rows):
    assert predict(serving, {"rows": [dict(rows[0], Age=140)]}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": "Age", "data": [[1]]}},
        {"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": ["Age"], "data": 5}},
        {"dataframe_split": {"columns": ["Age", "Age"], "data": [[1, 2]]}},
        {"dataframe_split": {"columns": ["Age"], "data": [[1, 2]]}},
        {"dataframe_split": []},
        {"inputs": {}},
        {"rows": "x"},
        {"rows": [1, 2]},
        "just a string",
    ],
)
def test_malformed_payloads_are_422(serving, body):
    r = predict(serving, body)
    assert r.status_code == 422, r.text


def test_unknown_model_names_share_one_metric_label_on_every_path(serving, guarded, rows):
    for i in range(60):
        httpx.post(f"{serving}/models/made-up-{i}/predict", json={"rows": rows[:1]})
        httpx.post(f"{guarded}/models/made-up-{i}/predict", json={"rows": rows[:1]})  # 401
    for url, headers in ((serving, {}), (guarded, {"Authorization": f"Bearer {TOKEN}"})):
        text = httpx.get(f"{url}/metrics", headers=headers).text
        assert "made-up-" not in text and 'model="other"' in text


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(serving):
    """A chunked upload is answered 413 once it passes the limit, not read whole first."""
    import select
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(serving).hostname, urlsplit(serving).port
    chunk = b"x" * 1_000_000
    sent_mb, answer = 0, b""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(
            f"POST /models/{MODEL}/predict HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            while sent_mb < 300:  # 300 MB if it were read whole
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent_mb += 1
                if select.select([sock], [], [], 0)[0]:
                    break
            answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            answer = answer or b"(connection closed by the server)"
    assert sent_mb < 20, f"{sent_mb} MB sent before the server refused"
    assert b" 413 " in answer.split(b"\r\n")[0] or b"closed" in answer, answer[:200]


def test_docs_and_schema_need_the_token(guarded):
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(f"{guarded}{path}").status_code == 401
        ok = httpx.get(f"{guarded}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200


def test_a_non_ascii_bearer_value_is_401(guarded, rows):
    r = httpx.post(
        f"{guarded}/models/{MODEL}/predict",
        json={"rows": rows[:1]},
        headers={"Authorization": "Bearer t\xe9st\xff".encode("latin-1")},
    )
    assert r.status_code == 401


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"],
)
def test_only_documented_content_types(serving, rows, content_type):
    import json

    r = httpx.post(
        f"{serving}/models/{MODEL}/predict",
        content=json.dumps({"rows": rows[:1]}),
        headers={"content-type": content_type} if content_type else {},
    )
    assert r.status_code == 415, r.text


def test_client_request_ids_are_bounded_and_kept_beside_the_servers(serving, rows):
    for bad in ("x" * 200, "a b", "<script>"):
        r = predict(serving, {"rows": rows[:1]}, headers={"x-request-id": bad})
        assert r.status_code == 400 and "X-Request-ID" in r.json()["error"]
    a = predict(serving, {"rows": rows[:1]}, headers={"x-request-id": "same"})
    b = predict(serving, {"rows": rows[:1]}, headers={"x-request-id": "same"})
    assert a.json()["request_id"] != b.json()["request_id"]  # no collisions
    assert a.headers["x-client-request-id"] == "same"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": MODEL, "version": "99999"}, 404),
        ({"model": MODEL, "version": "latest"}, 404),
        ({"model": MODEL, "version": "no such alias"}, 422),
        ({"model": "nope"}, 404),
        ({"model": 5}, 422),
        ({"version": "1"}, 422),
        ({"model": MODEL, "extra": 1}, 422),
        ([MODEL], 422),
        ("champion", 422),
    ],
)
def test_odd_reload_requests_are_4xx(serving, body, status):
    r = httpx.post(f"{serving}/reload", json=body, headers=admin(), timeout=60)
    assert r.status_code == status, r.text
    assert httpx.get(f"{serving}/models/{MODEL}").status_code == 200


def test_reload_body_that_is_not_json_is_400(serving):
    r = httpx.post(
        f"{serving}/reload",
        content=b"{model",
        headers={**admin(), "content-type": "application/json"},
    )
    assert r.status_code == 400


def test_feedback_is_checked_against_what_was_answered(serving, rows):
    rid = predict(serving, {"rows": rows[:2]}).json()["request_id"]
    fb = f"{serving}/models/{MODEL}/feedback"
    unknown = httpx.post(
        fb, json={"request_id": "0123456789abcdef-2-0123456789abcdef", "label": "bad"}
    )
    assert unknown.status_code == 404
    other = httpx.post(fb, json={"request_id": "anything", "label": "bad"})
    assert other.status_code == 404
    assert httpx.post(fb, json={"request_id": rid, "row": 2, "label": "bad"}).status_code == 422
    assert httpx.post(fb, json={"request_id": rid, "row": -1, "label": "bad"}).status_code == 422
    for label in (1, True, None, "maybe", ["bad"]):
        r = httpx.post(fb, json={"request_id": rid, "label": label})
        assert r.status_code == 422 and "label" in r.json()["error"], label
    # One bad item refuses the request whole: nothing of it is logged.
    mixed = {"labels": [{"request_id": rid, "label": "bad"}, {"request_id": rid, "label": 3}]}
    assert httpx.post(fb, json=mixed).status_code == 422
    first = httpx.post(fb, json={"request_id": rid, "row": 1, "label": "good"}).json()
    again = httpx.post(fb, json={"request_id": rid, "row": 1, "label": "good"}).json()
    assert first == {"accepted": 1, "logged": 1, "duplicates": 0}
    assert again == {"accepted": 1, "logged": 0, "duplicates": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"psi": [1, 2]},
        {"psi": "high"},
        {"psi": {"Age": "high"}},
        {"decision": "panic"},
        {"triggered": "yes"},
        {"unknown": 1},
        [1],
    ],
)
def test_odd_drift_reports_are_422(serving, body):
    r = httpx.post(f"{serving}/models/{MODEL}/drift", json=body, headers=admin())
    assert r.status_code == 422, r.text


def test_a_drift_report_with_unknown_features_keeps_labels_bounded(serving):
    psi = {f"feature-{i}": 0.1 for i in range(50)} | {"Age": 0.3}
    r = httpx.post(
        f"{serving}/models/{MODEL}/drift", json={"decision": "ok", "psi": psi}, headers=admin()
    )
    assert r.status_code == 200
    text = httpx.get(f"{serving}/metrics").text
    assert "feature-1" not in text and f'retrainer_psi{{feature="Age",model="{MODEL}"}} 0.3' in text


def test_at_the_spool_bound_serving_answers_503_rather_than_unlogged(served_model, rows, tmp_path):
    """Destination unreachable, a tiny spool: near the bound it is reported, at it 503."""
    from retrainer.config.settings import get_settings
    from testenv import free_port

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the log folder should be")
    env = {
        "RETRAINER_INFERENCE_LOG_URI": str(blocked),
        "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path / "spool"),
        "RETRAINER_SERVING_SPOOL_MAX_MB": "0.05",
        "RETRAINER_SERVING_COMPACT_SECONDS": "0.2",
    }
    proc, url = start_server(get_settings(), MODEL, free_port(), env)
    try:
        answered = refused = 0
        for _ in range(400):
            r = predict(url, {"rows": rows[:2]})
            if r.status_code == 503:
                refused += 1
                assert r.headers["retry-after"] and "logging" in r.json()["error"]
                break
            assert r.status_code == 200
            answered += 1
        assert refused == 1 and answered > 5
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["logs"]["requests"]["state"] == "full"
        # The spool can fill before the first compaction attempt has failed and said why.
        deadline = time.monotonic() + 30
        while not ready.json()["logs"]["requests"]["last_error"] and time.monotonic() < deadline:
            time.sleep(0.5)
            ready = httpx.get(f"{url}/ready")
        assert ready.json()["logs"]["requests"]["last_error"]
        text = httpx.get(f"{url}/metrics").text
        assert 'retrainer_log_spool_state{log="requests"} 2.0' in text
        # The destination comes back: every answered row is written, the server answers again.
        blocked.unlink()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and predict(url, {"rows": rows[:2]}).status_code != 200:
            time.sleep(0.5)
        flushed = httpx.post(f"{url}/flush", headers=admin()).json()
        assert flushed["pending_segments"] == 0
        written = sum(len(pd.read_parquet(f)) for f in blocked.rglob("*.parquet"))
        assert written >= 2 * (answered + 1)
    finally:
        log = stop_server(proc)
    assert "spool near limit" in log and "spool full" in log


def _partial_post(url: str, path: str, announced: int, sent: bytes, close: bool = True):
    """A POST announcing ``announced`` body bytes and sending only ``sent``: the socket, open
    unless ``close``."""
    import socket
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {announced}\r\n\r\n".encode()
        + sent
    )
    if close:
        sock.close()
    return sock


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_client_hanging_up_mid_body_is_not_a_failed_prediction(serving):
    """Counted as the client's (status 499), never as a 500 or a champion error: else anyone
    could push the error-rate alert, or a rollout's error comparison, over its limit."""
    labels = f'endpoint="predict",model="{MODEL}"'
    before = {
        s: _metric(serving, f'retrainer_requests_total{{{labels},status="{s}"}}')
        for s in ("499", "500")
    }
    champion_errors = _metric(
        serving, f'retrainer_role_errors_total{{model="{MODEL}",role="champion"}}'
    )
    for _ in range(20):
        _partial_post(serving, f"/models/{MODEL}/predict", 100, b"{")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _metric(serving, f'retrainer_requests_total{{{labels},status="499"}}')
        if now >= before["499"] + 20:
            break
        time.sleep(0.1)
    assert now == before["499"] + 20
    errors = f'retrainer_request_errors_total{{{labels},reason="disconnect"}}'
    assert _metric(serving, errors) >= 20  # its own reason: the error-rate alert leaves it out
    assert _metric(serving, f'retrainer_requests_total{{{labels},status="500"}}') == before["500"]
    assert (
        _metric(serving, f'retrainer_role_errors_total{{model="{MODEL}",role="champion"}}')
        == champion_errors
    )


@pytest.fixture(scope="module")
def impatient(served_model):
    """A server that waits 1 s for a request's line and headers, and 1 s for its body."""
    from retrainer.config.settings import get_settings
    from testenv import free_port

    waits = {"RETRAINER_SERVING_BODY_SECONDS": "1", "RETRAINER_SERVING_HEAD_SECONDS": "1"}
    proc, url = start_server(get_settings(), MODEL, free_port(), waits)
    yield url
    stop_server(proc)


@pytest.mark.parametrize("path", [f"/models/{MODEL}/predict", f"/models/{MODEL}/feedback"])
def test_a_stalled_body_is_answered_408_not_held_for_ever(impatient, path):
    sock = _partial_post(impatient, path, 10, b"{", close=False)
    try:
        started = time.monotonic()
        answer = sock.recv(65536)
        waited = time.monotonic() - started
        head, _, body = answer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        while len(body) < length:  # the body may come in a segment of its own
            more = sock.recv(65536)
            if not more:
                break
            body += more
    finally:
        sock.close()
    assert b" 408 " in head.split(b"\r\n")[0], answer[:300]
    assert b"did not arrive within 1 s (1 of 10 bytes)" in body
    assert waited < 20


def test_a_correction_within_one_feedback_request_keeps_the_clients_last_word(serving, rows):
    """[bad, good, bad] for one row: readers keep a row's last label, so all three are logged
    (the last is bad); only a label equal to the row's latest one is a duplicate."""
    rid = predict(serving, {"rows": rows[:1]}).json()["request_id"]
    fb = f"{serving}/models/{MODEL}/feedback"
    three = [{"request_id": rid, "label": v} for v in ("bad", "good", "bad")]
    assert httpx.post(fb, json={"labels": three}).json() == {
        "accepted": 3,
        "logged": 3,
        "duplicates": 0,
    }
    same = httpx.post(fb, json={"labels": [{"request_id": rid, "label": "bad"}] * 2}).json()
    assert same == {"accepted": 2, "logged": 0, "duplicates": 2}
    back = [{"request_id": rid, "label": v} for v in ("good", "bad")]
    assert httpx.post(fb, json={"labels": back}).json()["logged"] == 2


def test_a_version_beyond_64_bits_is_404_not_a_registry_500(serving):
    huge = "9" * 200
    reload = httpx.post(
        f"{serving}/reload", json={"model": MODEL, "version": huge}, headers=admin(), timeout=60
    )
    assert reload.status_code == 404 and "64-bit" in reload.json()["error"], reload.text
    put = httpx.put(
        f"{serving}/models/{MODEL}/rollout",
        json={"challenger": huge, "mode": "shadow", "fraction": 0.5},
        headers=admin(),
        timeout=60,
    )
    assert put.status_code == 404 and "64-bit" in put.json()["error"], put.text


def test_refusals_quote_a_bounded_excerpt_of_the_clients_value(serving, rows):
    big = predict(serving, {"rows": [dict(rows[0], Amount="x" * 1_500_000)]})
    assert big.status_code == 422 and "'Amount' expects a number" in big.json()["error"]
    assert len(big.content) < 2_000
    not_utf8 = httpx.post(
        f"{serving}/invocations",
        content=b"\xff" * 1_500_000,
        headers={"Content-Type": "text/csv"},
    )
    assert not_utf8.status_code == 400 and "valid UTF-8" in not_utf8.text
    assert len(not_utf8.content) < 2_000
    many = predict(
        serving, {"rows": [dict(rows[0], **{"y" * 500_000 + str(i): 1 for i in range(3)})]}
    )
    assert many.status_code == 422 and "unknown column(s)" in many.json()["error"]
    assert len(many.content) < 2_000


def test_an_unknown_path_or_method_answers_in_the_same_error_shape(serving):
    r = httpx.get(f"{serving}/modles/{MODEL}/predict")
    assert r.status_code == 404 and "detail" not in r.json()
    assert "'/modles/credit_srv/predict'" in r.json()["error"]
    assert "/models/{name}/predict" in r.json()["error"]
    r = httpx.get(f"{serving}/models/{MODEL}/predict")
    assert r.status_code == 405 and r.json() == {
        "error": "GET is not allowed on '/models/credit_srv/predict'"
    }
    assert r.headers["allow"] == "POST"
    r = httpx.get(f"{serving}/" + "x" * 10_000)
    assert r.status_code == 404 and len(r.json()["error"]) < 400


def _answer_when_held(url: str, first: bytes, trickle: bytes = b"") -> tuple[bytes, float]:
    """Open a connection, send `first`, then one byte of `trickle` every 0.3 s; what the server
    answered before closing, and after how long."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    started = time.monotonic()
    answer = b""
    try:
        sock.sendall(first)
        sock.settimeout(0.3)
        for i in range(100):
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            except TimeoutError:
                if trickle:
                    sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            except ConnectionResetError:
                break
    finally:
        sock.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    "first, trickle",
    [
        (b"", b""),  # opened and left silent
        (b"POST /models/credit_srv/predict HTTP/1.1\r\nHost: x\r\n", b"X-Slow: aaaaaaaaaa"),
        (b"G", b"ET /health HTTP/1.1\r\nHost: x\r\n"),  # the request line a byte at a time
    ],
    ids=["silent", "trickled-headers", "trickled-line"],
)
def test_a_late_request_head_is_answered_408_and_the_connection_closed(impatient, first, trickle):
    answer, waited = _answer_when_held(impatient, first, trickle)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert answer.endswith(b"the request line and headers did not arrive in time\n")
    assert 0.9 < waited < 10  # closed at the deadline, not held on to


def test_a_kept_alive_connection_gets_the_head_deadline_again_for_each_request(impatient):
    import socket

    host, port = impatient.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        for _ in range(3):  # each answered, though the connection outlives the 1 s deadline
            time.sleep(0.6)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = sock.recv(65536)
            while not got.endswith(b"}"):  # the body may come in a segment of its own
                got += sock.recv(65536)
            assert got.startswith(b"HTTP/1.1 200 ") and got.endswith(b'{"status":"ok"}')
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no end of headers
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")


def test_an_odd_head_deadline_is_refused_at_start(served_model):
    import os
    import subprocess
    import sys

    from retrainer.config.environment import process_environment
    from retrainer.config.settings import get_settings

    for value in ("0", "-1", "nan", "inf", "soon"):
        env = {**process_environment(get_settings()), "RETRAINER_SERVING_HEAD_SECONDS": value}
        out = subprocess.run(
            [sys.executable, "-m", "retrainer.cli", "serve", "--port", "1"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode != 0 and "RETRAINER_SERVING_HEAD_SECONDS" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
