import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

import testenv  # noqa: E402,F401  (sets the isolated environment before Airflow is imported)
from retrainer.config.environment import process_environment


@pytest.fixture(scope="session")
def airflow_db():
    """Migrated Airflow and MLflow stores in the session's state folder (once per session)."""
    from retrainer.platform import services

    services.init_state(testenv.SETTINGS, say=print)
    return testenv.SETTINGS


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's standalone S3 server as a real HTTP endpoint on loopback, in its own process."""
    import os
    import socket
    import subprocess
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto's S3 server did not start")
            time.sleep(0.2)
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(s3_endpoint):
    import uuid

    from retrainer.stores import storage

    name = f"bucket-{uuid.uuid4().hex[:10]}"
    # On this session's endpoint, whatever another test left in the environment.
    storage._client(s3_endpoint).create_bucket(Bucket=name)
    return name


def register_version(name: str, run_id: str, spec_updates: dict | None = None, **model_updates):
    """Validate, train, evaluate, gate and register one candidate, as the retrain DAG's tasks do
    (`spec_updates`: top-level spec blocks replaced for this candidate, e.g. its features)."""
    return prepare_version(name, run_id, spec_updates, **model_updates)()


def prepare_version(name: str, run_id: str, spec_updates: dict | None = None, **model_updates):
    """`register_version` up to its last step: the candidate validated, trained and gated now,
    and a call that registers it (moving the challenger alias) when the test wants it to."""
    from retrainer.config.settings import RunContext
    from retrainer.spec import load_spec, parse_spec
    from retrainer.steps import retrain as pipeline

    spec = load_spec(testenv.MODELS / f"{name}.yaml")
    if spec_updates:
        spec = parse_spec({**spec.model_dump(), **spec_updates})
    if model_updates:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update=model_updates)})
    ctx = RunContext(dag_id=spec.retrain_dag_id, run_id=run_id)
    validated = pipeline.validate_data(spec, ctx)
    trained = pipeline.train_candidate(spec, ctx, validated)
    gated = pipeline.gate_candidate(spec, ctx, pipeline.evaluate_candidate(spec, ctx, trained))

    def register() -> str:
        registered = pipeline.register_candidate(spec, ctx, gated)
        assert registered is not None, gated["gate"]["reasons"]
        return registered["version"]

    return register


@pytest.fixture(scope="session")
def served_model(airflow_db):
    """credit_srv with a champion (v1) registered."""
    register_version("credit_srv", "fixture-v1")
    return "credit_srv"


def start_server(
    settings, model: str, port: int, extra_env: dict | None = None, max_rows: int = 1000
):
    import os
    import subprocess
    import time

    import httpx

    env = dict(os.environ, **process_environment(settings), **(extra_env or {}))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrainer.cli",
            "serve",
            "--model",
            model,
            "--port",
            str(port),
            "--max-rows",
            str(max_rows),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"retrainer serve did not start:\n{out[-3000:]}")
        time.sleep(0.3)
    return proc, url


def log_served(
    model: str,
    version: str,
    rows: list[dict],
    predictions: list,
    scores: list | None = None,
    prefix: str = "sim",
) -> str:
    """Rows into the inference log as the serving API writes them (missing values as None), with
    each row's prediction and, when given, its score; returns the request id."""
    import time

    import pandas as pd

    from retrainer.config.settings import get_settings
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    rid = f"{prefix}-{time.time_ns()}"
    log = BatchedParquetLog(get_settings().inference_log_root)
    log.append(
        model,
        [
            {
                **{k: (None if pd.isna(v) else v) for k, v in row.items()},
                "_request_id": rid,
                "_row": i,
                "_ts": now_iso(),
                "_model_version": version,
                "_prediction": predictions[i],
                **({} if scores is None else {"_score": scores[i]}),
            }
            for i, row in enumerate(rows)
        ],
    )
    log.close()
    return rid


def credit_rows(url: str, model: str, n: int) -> list[dict]:
    """The first `n` complete rows of the credit data, as the served version's signature names
    its inputs (plain Python values, ready to post)."""
    import httpx
    import pandas as pd

    info = httpx.get(f"{url}/models/{model}").json()
    columns = [c["name"] for c in info["inputs"]]
    data = pd.read_csv(testenv.ROOT / "examples" / "credit" / "credit_data.csv").dropna().head(n)
    return [
        {c: (r[c].item() if hasattr(r[c], "item") else r[c]) for c in columns}
        for _, r in data.iterrows()
    ]


def stop_server(proc) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except Exception:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace") if out else ""


@pytest.fixture(scope="session")
def serving(served_model):
    """`retrainer serve` as its own process on the session's serving port (the one deploys reload)."""
    proc, url = start_server(testenv.SETTINGS, served_model, testenv.SETTINGS.serving_port)
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def webhook():
    """A webhook receiver on loopback: (the requests it received, its port)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                {
                    "auth": self.headers.get("Authorization"),
                    "path": self.path,
                    "body": json.loads(body),
                }
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received, server.server_address[1]
    server.shutdown()
