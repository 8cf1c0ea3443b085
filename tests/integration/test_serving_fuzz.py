"""Property-based fuzz of the whole serving API from its own OpenAPI document (schemathesis).

`schemathesis run` against a live server with every check it has (all enabled: no server
error, statuses, content types, headers and bodies as documented, invalid data refused with a
4xx, valid data accepted, auth not ignored, unsupported methods refused), in the examples,
coverage and fuzzing phases, positive and negative generation. Bounded by examples per
operation so it fits in `make test`; the cases per operation are printed (`-s`) and kept in
the session's state folder (fuzz_cases.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

# Imported at collection: at run time `conftest` may name another folder's conftest.
from conftest import start_server, stop_server

pytestmark = pytest.mark.integration
MODEL = "credit_srv"
TOKEN = "fuzz-token-789"
MAX_EXAMPLES = 30
# Any string is a schema-valid text/csv body, and most strings are not a table of the model's
# columns (MLflow answers those 400 too; test_serving_mlflow compares the two side by side), so
# "valid data is accepted" is not checked on /invocations. Its JSON bodies have the same schema
# as /models/<name>/predict, where the check runs.
CONFIG = """
[checks]
enabled = true  # every check (on the command line, --checks all would override the line below)

[[operations]]
include-path = "/invocations"
checks.positive_data_acceptance.enabled = false
"""


def test_the_whole_api_answers_every_input_as_documented(served_model, tmp_path):
    from retrainer.config.settings import get_settings
    from testenv import STATE, free_port

    proc, url = start_server(
        get_settings(),
        MODEL,
        free_port(),
        {"RETRAINER_API_TOKEN": TOKEN, "RETRAINER_SERVING_SPOOL_DIR": str(tmp_path / "spool")},
        max_rows=20,
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    har = tmp_path / "fuzz.har"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    documented = {
        f"{method.upper()} {path}"
        for path, ops in httpx.get(f"{url}/openapi.json", headers=headers).json()["paths"].items()
        for method in ops
    }
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{url}/openapi.json",
                "--phases",
                "examples,coverage,fuzzing",
                "--mode",
                "all",
                # Only this test's model: the session may serve others (another test's linear
                # model answers 422 to floats that overflow once scaled, which no JSON schema of
                # its inputs can express).
                "--exclude-path-regex",
                f"^/models/(?!{MODEL}(/|$))[^/]+",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-deterministic",
                "--workers",
                "1",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--request-timeout",
                "60",
                "--report",
                "har",
                "--report-har-path",
                str(har),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its cache (.schemathesis/) stays out of the checkout
        )
    finally:
        log = stop_server(proc)
    cases: Counter[str] = Counter()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        req = entry["request"]
        op = f"{req['method']} {urlsplit(req['url']).path}"
        cases[op if op in documented else "(undocumented methods, expecting 405)"] += 1
    counts = dict(sorted(cases.items()))
    (STATE / "fuzz_cases.json").write_text(json.dumps(counts, indent=1))
    print(f"\nschemathesis: {sum(counts.values())} cases")
    for op, n in counts.items():
        print(f"  {n:>5}  {op}")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "Traceback" not in log, log[-3000:]
    served = {f"POST /models/{MODEL}/predict", f"POST /models/{MODEL}/feedback", "POST /reload"}
    assert served <= set(counts) and all(counts[op] >= MAX_EXAMPLES for op in served)
