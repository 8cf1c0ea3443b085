"""/invocations side by side with a real `mlflow models serve` of the same version: same bodies
(JSON and CSV), same statuses, same predictions, MLflow's error shape."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "credit_srv"


@pytest.fixture(scope="module")
def mlflow_serve(serving):
    from retrainer.config.environment import process_environment
    from retrainer.config.settings import get_settings
    from testenv import free_port

    version = httpx.get(f"{serving}/models/{MODEL}").json()["version"]
    port = free_port()
    env = dict(os.environ, **process_environment(get_settings()))
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{MODEL}/{version}",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mlflow models serve did not start")
        time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def frame(serving):
    info = httpx.get(f"{serving}/models/{MODEL}").json()
    columns = [c["name"] for c in info["inputs"]]
    return pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv").dropna()[columns].head(8)


def both(serving, mlflow_serve, content: bytes, content_type: str):
    headers = {"content-type": content_type}
    ours = httpx.post(f"{serving}/invocations", content=content, headers=headers, timeout=60)
    theirs = httpx.post(f"{mlflow_serve}/invocations", content=content, headers=headers, timeout=60)
    return ours, theirs


def test_csv_bodies_are_parsed_as_mlflow_parses_them(serving, mlflow_serve, frame):
    body = frame.to_csv(index=False).encode()
    ours, theirs = both(serving, mlflow_serve, body, "text/csv")
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json()["predictions"] == theirs.json()["predictions"]
    ours, theirs = both(serving, mlflow_serve, body, "text/csv; charset=utf-8")
    assert ours.status_code == theirs.status_code == 200


def test_json_bodies_give_the_same_predictions(serving, mlflow_serve, frame):
    body = frame.to_json(orient="split", index=False).encode()
    ours, theirs = both(
        serving, mlflow_serve, b'{"dataframe_split": %s}' % body, "application/json"
    )
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json()["predictions"] == theirs.json()["predictions"]


def _csv_with(frame, column, value) -> bytes:
    bad = frame.head(2).astype(object)
    bad[column] = value
    return bad.to_csv(index=False).encode()


@pytest.mark.parametrize(
    ("case", "content_type"),
    [
        ("a text in a numeric column", "text/csv"),
        ("a missing column", "text/csv"),
        ("bytes that are not UTF-8", "text/csv"),
        ("json that does not parse", "application/json"),
        ("json without a known key", "application/json"),
        ("json list of numbers", "application/json"),
    ],
)
def test_bad_bodies_get_mlflows_status_and_error_shape(
    serving, mlflow_serve, frame, case, content_type
):
    body = {
        "a text in a numeric column": _csv_with(frame, "Age", "old"),
        "a missing column": frame.drop(columns=["Age"]).to_csv(index=False).encode(),
        "bytes that are not UTF-8": b"Age,Home\n\xff\xfe,rent\n",
        "json that does not parse": b'{"dataframe_split": ',
        "json without a known key": b'{"frames": []}',
        "json list of numbers": b"[1, 2, 3]",
    }[case]
    ours, theirs = both(serving, mlflow_serve, body, content_type)
    assert ours.status_code == theirs.status_code == 400, (case, ours.text, theirs.text[:300])
    assert ours.json()["error_code"] == theirs.json()["error_code"]
    assert ours.json()["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE")
    assert set(ours.json()) == {"error_code", "message"} and ours.json()["message"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "text/csv; charset=latin-1"]
)
def test_undocumented_content_types_get_mlflows_415(serving, mlflow_serve, frame, content_type):
    ours, theirs = both(serving, mlflow_serve, frame.to_csv(index=False).encode(), content_type)
    assert ours.status_code == theirs.status_code == 415, (ours.text, theirs.text[:300])
    assert ours.json()["error_code"] == "BAD_REQUEST"
