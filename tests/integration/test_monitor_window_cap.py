"""A window holding more rows than monitoring.max_rows, through the real monitor steps and
MLflow: the check reads a uniform sample of that many, and its decision says how many there were."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd
import pytest

import testenv
from conftest import log_served, register_version
from retrainer import constants as C
from retrainer.config.settings import RunContext, get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_rows"
TRAFFIC = Path(__file__).resolve().parents[2] / "examples" / "credit" / "traffic"


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def log_labels(rid: str, labels, answered: str, rows=None) -> None:
    """Labels into the feedback log as /feedback writes them: row i of `rows` (default: 0..)
    gets the i-th of `labels`, all answered at `answered`."""
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    fb = BatchedParquetLog(get_settings().feedback_root, "feedback")
    fb.append(
        MODEL,
        [
            {"_request_id": rid, "_row": i, "_label": y, "_ts": now_iso(), "_answered": answered}
            for i, y in zip(rows if rows is not None else range(len(labels)), labels, strict=True)
        ],
    )
    fb.close()


def check(name: str) -> dict:
    """One monitor check through the real steps; its decision."""
    from retrainer.steps.monitor import measure, window

    ctx = RunContext(dag_id=f"{MODEL}_monitor", run_id=f"rows-{name}-{time.time_ns()}")
    return measure.measure_drift(spec(), ctx, window.read_window(spec(), ctx))["decision"]


def test_a_window_over_max_rows_is_checked_on_a_sample_and_says_so(airflow_db, caplog):
    from retrainer.steps.monitor import measure, window
    from retrainer.stores.tracking import mlflow_client

    caplog.set_level(logging.INFO, logger="retrainer")
    version = register_version(MODEL, f"rows-v1-{time.time_ns()}")
    base = pd.read_csv(TRAFFIC / "base.csv").drop(columns=["Status"])
    parts = [base.iloc[k : k + 150] for k in range(0, 600, 150)]  # four log files
    ids = [
        log_served(MODEL, version, p.to_dict("records"), ["good"] * len(p), prefix=f"rows{n}")
        for n, p in enumerate(parts)
    ]
    # a check of long ago left its window snapshot: this check deletes it (RETRAINER_SNAPSHOT_DAYS)
    stale = Path(get_settings().work_root) / MODEL / "rows-check-long-ago" / "window.parquet"
    stale.parent.mkdir(parents=True, exist_ok=True)
    base.head(5).to_parquet(stale)
    long_ago = time.time() - (get_settings().snapshot_days + 1) * 86400
    os.utime(stale, (long_ago, long_ago))
    ctx = RunContext(dag_id=f"{MODEL}_monitor", run_id=f"rows-check-{time.time_ns()}")
    read = window.read_window(spec(), ctx)
    w = read["window"]
    assert not stale.exists() and Path(w["uri"]).exists()
    assert "deleted 1 window snapshot(s) of credit_rows older than" in caplog.text
    assert (w["rows"], w["logged_rows"], w["max_rows"]) == (250, 600, 250)
    assert "more than monitoring.max_rows (250)" in caplog.text
    sample = pd.read_parquet(w["uri"])
    assert len(sample) == 250 and not sample.duplicated(["_request_id", "_row"]).any()
    assert set(sample["_request_id"]) == set(ids)  # drawn from every file, not the latest only

    # a retried task reuses the window's bounds and draws the same rows
    again = window.read_window(spec(), ctx)
    assert again["window"] == w
    pd.testing.assert_frame_equal(pd.read_parquet(again["window"]["uri"]), sample)

    measured = measure.measure_drift(spec(), ctx, read)
    decision = measured["decision"]
    assert decision["rows"] == 250 and decision["window"]["logged_rows"] == 600
    logged = mlflow_client(get_settings()).download_artifacts(
        read["mlflow_run_id"], C.ARTIFACT_MONITOR_DECISION
    )
    assert json.loads(Path(logged).read_text())["window"]["logged_rows"] == 600
    assert "rows 250 (a random sample of 600 logged: max_rows)" in caplog.text


def test_labels_over_max_rows_are_sampled_by_row_with_their_corrections(airflow_db, caplog):
    """Every row of the window labelled, then every label corrected (the world changed): the
    check reads a sample of rows' labels, each row with its correction, and says so."""
    from retrainer.serving.inference_log import now_iso

    version = register_version(MODEL, f"rows-v2-{time.time_ns()}")
    check("before")  # earlier traffic: its own window
    data = pd.read_csv(TRAFFIC / "base.csv")
    rid = log_served(
        MODEL, version, data.drop(columns=["Status"]).to_dict("records"), ["good"] * len(data)
    )
    answered = now_iso()
    flipped = data["Status"].map({"good": "bad", "bad": "good"})
    for labels in (data["Status"], flipped):  # the correction comes last
        log_labels(rid, list(labels), answered)
        time.sleep(0.01)
    labels = check("labels")["labels"]
    # 1,200 labels given for 600 rows; 250 labels' worth read: about 125 rows with both labels
    assert 100 <= labels["rows"] <= 130, labels
    assert "of the 1200 labels that arrived in the window, a random sample by row" in labels["note"]
    # each row read with its correction: the flipped labels invert the champion's ranking
    assert labels["value"] < 0.35, labels


def test_a_labelled_row_counts_once_when_its_requests_other_rows_are_labelled_later(airflow_db):
    """One request of 600 rows: half its rows labelled in one window, the other half in the
    next. Each window counts its own labels: the first half is not counted again when the
    request is looked up for the second."""
    from retrainer.serving.inference_log import now_iso

    version = register_version(MODEL, f"rows-v3-{time.time_ns()}")
    check("flush")  # earlier traffic: its own window
    data = pd.read_csv(TRAFFIC / "base.csv")
    features = data.drop(columns=["Status"]).to_dict("records")
    answered = now_iso()
    rid = log_served(MODEL, version, features, ["good"] * len(data))

    status = list(data["Status"])
    log_labels(rid, status[:120], answered, rows=range(0, 120))
    assert check("half-1")["labels"]["rows"] == 120
    log_labels(rid, status[120:240], answered, rows=range(120, 240))
    log_served(MODEL, version, features[:150], ["good"] * 150)  # the next window's own traffic
    second = check("half-2")["labels"]
    assert second["rows"] == 120, second  # not 240: the first half was counted already


def test_a_row_left_out_of_the_label_sample_keeps_no_label_its_correction_replaced(airflow_db):
    """Labels that reached the log before their rows, then every one corrected once the rows
    landed, with more corrections than max_rows: a row whose correction the sample left out
    is left out whole, never scored with the label its correction replaced."""
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    version = register_version(MODEL, f"rows-v4-{time.time_ns()}")
    data = pd.read_csv(TRAFFIC / "base.csv")
    features = data.drop(columns=["Status"]).to_dict("records")
    rid, answered = f"corr-{time.time_ns()}", now_iso()

    log_labels(
        rid, list(data["Status"]), answered
    )  # the labels land first (the rows' upload was retried)
    log_served(MODEL, version, features[:150], ["good"] * 150)  # other traffic: a decided window
    assert check("labels-first")["decision"] != "insufficient_data"
    rows = BatchedParquetLog(get_settings().inference_log_root)  # the rows land, late
    rows.append(
        MODEL,
        [
            {**r, "_request_id": rid, "_row": i, "_ts": answered, "_model_version": version}
            for i, r in enumerate(features)
        ],
    )
    rows.close()
    log_labels(rid, list(data["Status"].map({"good": "bad", "bad": "good"})), answered)
    labels = check("corrected")["labels"]
    assert labels["rows"] <= 250, labels  # the sample of corrections, not every window row
    assert labels["value"] < 0.35, labels  # each row with its correction only
