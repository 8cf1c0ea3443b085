"""The monitor DAG through dag.test(): every decision, the trigger, dedup and cooldown, delayed
labels, and bad traffic, against the real registry and the real inference-log writer."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import testenv
from conftest import log_served, register_version
from retrainer import constants as C
from retrainer.config.settings import get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_mon"
TRAFFIC = Path(__file__).resolve().parents[2] / "examples" / "credit" / "traffic"


@pytest.fixture(scope="module")
def champion(airflow_db):
    return register_version(MODEL, f"mon-v1-{time.time_ns()}")


def spec():
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{MODEL}.yaml")


def log_traffic(df: pd.DataFrame, version: str, labels: bool = False) -> None:
    """Rows into the inference log (and labels into the feedback log) as the serving API writes them."""
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    settings = get_settings()
    rows = df.drop(columns=["Status"], errors="ignore").to_dict(orient="records")
    rid = log_served(MODEL, version, rows, ["good"] * len(rows))
    if labels:
        fb = BatchedParquetLog(settings.feedback_root, "feedback")
        fb.append(
            MODEL,
            [
                {"_request_id": rid, "_row": i, "_label": y, "_ts": now_iso()}
                for i, y in enumerate(df["Status"])
            ],
        )
        fb.close()


def monitor(conf=None):
    from retrainer.orchestration.monitor import monitor_dag

    dr = monitor_dag(spec()).test(run_conf=conf or {})
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    from retrainer.steps.monitor.checks import check_for_run

    return dr, states, check_for_run(spec(), dr.run_id)


def retrain_runs(prefix="drift__"):
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == f"{MODEL}_retrain").all()
        return {r.run_id: (str(r.state), r.conf) for r in runs if r.run_id.startswith(prefix)}


def finish_retrain_runs():
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        for r in session.query(DagRun).filter(DagRun.dag_id == f"{MODEL}_retrain").all():
            r.state = DagRunState.SUCCESS


def test_the_champion_carries_its_reference_profile(champion):
    from retrainer.steps.monitor.checks import champion_reference
    from retrainer.stores.tracking import mlflow_client

    version, _, profile = champion_reference(mlflow_client(get_settings()), spec())
    assert version == champion
    age = profile.features["Age"]
    assert age.kind == "numeric" and len(age.edges) == 9 and sum(age.shares) == pytest.approx(1)
    home = profile.features["Home"]
    assert "rent" in home.categories and home.null_share > 0  # Home has real missing values


def test_the_loop_decisions_trigger_dedup_and_cooldown(champion):
    # 1. Nothing logged yet: insufficient data, nothing triggered, the window is not consumed.
    dr, states, check = monitor()
    assert str(dr.state) == "success", states
    assert check["decision"]["decision"] == "insufficient_data"
    assert states["trigger_retrain"] == "skipped" and states["evidently_report"] == "success"

    # 2. Traffic from the training population: ok, and the Evidently report is in the run.
    log_traffic(pd.read_csv(TRAFFIC / "base.csv"), champion)
    dr, states, check = monitor()
    d = check["decision"]
    assert d["decision"] == "ok", d["reasons"]
    assert d["rows"] == 600 and d["max_psi"] < 0.1 and states["trigger_retrain"] == "skipped"
    from retrainer.stores.tracking import mlflow_client

    client = mlflow_client(get_settings())
    run = client.get_run(check["mlflow_run_id"])
    assert run.data.metrics["rows"] == 600 and "psi.Age" in run.data.metrics
    html = Path(client.download_artifacts(run.info.run_id, C.ARTIFACT_MONITOR_REPORT)).read_text()
    assert "PSI" in html and "Age" in html and len(html) > 100_000
    assert run.data.tags[C.TAG_WINDOW_START] == ""  # the first decided window: from the beginning

    # 3. The shifted population: retrain, triggered once with the PSI table as conf.
    shifted = pd.read_csv(TRAFFIC / "shifted.csv")
    log_traffic(shifted.iloc[:400], champion)
    dr, states, check = monitor()
    d = check["decision"]
    assert d["decision"] == "retrain" and "Age" in d["features"] and d["rows"] == 400
    assert d["window"]["start"] == run.data.tags[C.TAG_WINDOW_END]  # continues where the last ended
    assert states["trigger_retrain"] == "success" and check["action"] == "triggered"
    runs = retrain_runs()
    assert list(runs) == [f"drift__{dr.run_id}"]
    conf = runs[f"drift__{dr.run_id}"][1]
    assert conf["reason"].startswith("monitor: PSI") and conf["trigger"]["psi"]["Age"] > 0.25
    assert conf["trigger"]["window"]["rows"] == 400

    # 4. Drift persists while that retrain is queued: no second retrain.
    log_traffic(shifted.iloc[400:800], champion)
    dr, states, check = monitor()
    assert check["decision"]["decision"] == "retrain" and check["action"] == "in_flight"
    assert states["trigger_retrain"] == "skipped" and len(retrain_runs()) == 1

    # 5. The retrain finished; drift still there, but inside the cooldown: still no retrain.
    finish_retrain_runs()
    log_traffic(shifted.iloc[:400], champion)
    dr, states, check = monitor()
    assert check["action"] == "cooldown" and "cooldown" in check["action_detail"]
    assert len(retrain_runs()) == 1

    # 6. An operator overrides the cooldown for one run.
    log_traffic(shifted.iloc[400:800], champion)
    dr, states, check = monitor({"ignore_cooldown": True})
    assert check["action"] == "triggered" and len(retrain_runs()) == 2


def test_delayed_labels_below_the_gate_threshold_are_a_retrain_reason(champion):
    base = pd.read_csv(TRAFFIC / "base.csv")
    flipped = base.assign(Status=base["Status"].map({"good": "bad", "bad": "good"}))
    log_traffic(flipped, champion, labels=True)  # inputs as in training; the world changed
    dr, states, check = monitor()
    d = check["decision"]
    assert d["decision"] == "retrain" and d["max_psi"] < 0.1, d
    assert d["labels"]["rows"] == 600 and d["labels"]["value"] < 0.75
    assert d["labels"]["below_threshold"] and "roc_auc" in d["reasons"][-1]


def test_labels_that_come_after_their_window_was_decided_still_count(champion):
    """A label usually comes days after its answer, after the check that read its row: it is
    matched, through the answer time its request id carries, in the window it arrives in (it
    was matched only against that window's own rows, so never)."""
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso
    from retrainer.steps.monitor.window import read_log

    base = pd.read_csv(TRAFFIC / "base.csv")
    log_traffic(base, champion)  # answered today, no labels yet
    _, _, first = monitor()
    assert first["decision"]["decision"] == "ok"
    assert (first["decision"]["labels"] or {}).get("rows", 0) == 0  # none of its rows labelled
    logged = read_log(get_settings().inference_log_root, MODEL, None, datetime.now(UTC))
    answered = logged[logged["_request_id"] == logged["_request_id"].iloc[-1]]
    assert len(answered) == 600
    log_traffic(base, champion)  # the next window's own traffic
    flipped = base["Status"].map({"good": "bad", "bad": "good"})  # the world changed
    fb = BatchedParquetLog(get_settings().feedback_root, "feedback")
    fb.append(
        MODEL,
        [
            {"_request_id": rid, "_row": int(row), "_label": y, "_ts": now_iso(), "_answered": ts}
            for rid, row, ts, y in zip(
                answered["_request_id"], answered["_row"], answered["_ts"], flipped, strict=True
            )
        ],
    )
    fb.close()
    _, _, second = monitor()
    d = second["decision"]
    assert d["labels"]["rows"] == 600 and d["labels"]["value"] < 0.75, d["labels"]
    assert d["decision"] == "retrain" and "roc_auc" in d["reasons"][-1]
    log_traffic(base, champion)  # the next window: new rows, no new labels
    _, _, third = monitor()
    # the labelled rows counted once: none of this window's rows labelled, no label check
    assert third["decision"]["labels"] is None


def test_a_label_that_reaches_the_log_before_its_row_still_counts(champion):
    """Labels and rows reach the log through separate spools: a label can land a window before
    its row (the inference log's upload was retried). The row's window still finds it."""
    from retrainer.serving.inference_log import BatchedParquetLog, now_iso

    base = pd.read_csv(TRAFFIC / "base.csv")
    rid = f"early-{time.time_ns()}"
    fb = BatchedParquetLog(get_settings().feedback_root, "feedback")
    flipped = base["Status"].map({"good": "bad", "bad": "good"})
    fb.append(
        MODEL,
        [
            {"_request_id": rid, "_row": i, "_label": y, "_ts": now_iso(), "_answered": now_iso()}
            for i, y in enumerate(flipped)
        ],
    )
    fb.close()
    log_traffic(base, champion)  # this window's own rows, unlabelled
    monitor()
    rows = base.drop(columns=["Status"]).to_dict(orient="records")
    log = BatchedParquetLog(get_settings().inference_log_root)  # the labelled rows land now
    log.append(
        MODEL,
        [
            {**r, "_request_id": rid, "_row": i, "_ts": now_iso(), "_model_version": champion}
            for i, r in enumerate(rows)
        ],
    )
    log.close()
    _, _, check = monitor()
    assert check["decision"]["labels"]["rows"] == 600, check["decision"]["labels"]


@pytest.mark.parametrize(
    "mangle, expect",
    [
        (lambda df: df.drop(columns=["Income"]), "Income"),
        (lambda df: df.assign(Age="forty"), "Age"),
        (lambda df: df.assign(Price=None), "Price"),
    ],
    ids=["missing-column", "changed-type", "all-null"],
)
def test_bad_traffic_is_a_schema_alert_not_a_retrain(champion, mangle, expect):
    before = len(retrain_runs(""))
    log_traffic(mangle(pd.read_csv(TRAFFIC / "base.csv")), champion)
    dr, states, check = monitor()
    d = check["decision"]
    assert str(dr.state) == "success", states
    assert d["decision"] == "schema_changed" and d["features"] == [expect], d
    assert expect in d["problems"] and states["trigger_retrain"] == "skipped"
    assert len(retrain_runs("")) == before
    decision = json.loads(
        Path(
            __import__("retrainer.stores.tracking", fromlist=["x"])
            .mlflow_client(get_settings())
            .download_artifacts(check["mlflow_run_id"], C.ARTIFACT_MONITOR_DECISION)
        ).read_text()
    )
    assert decision["decision"] == "schema_changed"
    assert decision["automation"]["action"] == "none", decision["automation"]


def test_unseen_categories_are_their_own_bucket(champion):
    df = pd.read_csv(TRAFFIC / "base.csv")
    df.loc[df.index[:300], "Home"] = "houseboat"
    log_traffic(df, champion)
    _, _, check = monitor()
    d = check["decision"]
    assert d["decision"] == "retrain" and d["features"] == ["Home"]
    psi = json.loads(
        Path(
            __import__("retrainer.stores.tracking", fromlist=["x"])
            .mlflow_client(get_settings())
            .download_artifacts(check["mlflow_run_id"], C.ARTIFACT_MONITOR_PSI)
        ).read_text()
    )
    home = psi["features"]["Home"]
    assert home["unseen"] == ["houseboat"]
    assert home["current"][home["buckets"].index("<unseen>")] == pytest.approx(0.5)


def test_rows_that_reach_the_log_late_count_in_the_window_they_arrive_in(champion):
    """Rows answered two hours ago that reach the log only now (S3 was down, or a killed
    replica's spool was adopted later) fell before every window when windows went by the time
    rows were answered; they count in the window in which they arrive, once."""
    from datetime import timedelta

    from retrainer.serving.inference_log import BatchedParquetLog

    log_traffic(pd.read_csv(TRAFFIC / "base.csv"), champion)
    _, _, first = monitor()  # a decided window: the next one starts where it ended
    assert first["decision"]["decision"] != "insufficient_data"
    answered = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    rows = pd.read_csv(TRAFFIC / "base.csv").drop(columns=["Status"]).to_dict(orient="records")
    log = BatchedParquetLog(get_settings().inference_log_root)
    log.append(
        MODEL,
        [
            {**row, "_request_id": "late", "_row": i, "_ts": answered, "_model_version": champion}
            for i, row in enumerate(rows)
        ],
    )
    log.close()
    _, _, check = monitor()
    d = check["decision"]
    assert d["rows"] == 600 and d["decision"] == "ok", d.get("reasons")
    assert d["window"]["start"] > answered  # they were answered before the window began
    _, _, again = monitor()
    assert again["decision"]["decision"] == "insufficient_data"  # counted once, not twice


def test_window_bounds_never_overlap():
    from retrainer.steps.monitor.window import read_log

    settings = get_settings()
    everything = read_log(settings.inference_log_root, MODEL, None, datetime.now(UTC))
    assert len(everything) > 0


def test_no_champion_yet_skips_the_check_without_failing(airflow_db):
    from retrainer.orchestration.monitor import monitor_dag
    from retrainer.spec import load_spec
    from retrainer.steps.monitor.checks import check_for_run
    from retrainer.steps.monitor.decision import NO_CHAMPION
    from retrainer.stores.tracking import mlflow_client

    fresh = load_spec(testenv.MODELS / "credit_nochamp.yaml")
    dr = monitor_dag(fresh).test()
    states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}
    assert str(dr.state) == "success", states
    assert states == {
        "read_window": "success",
        "measure_drift": "skipped",
        "evidently_report": "skipped",
        "trigger_retrain": "skipped",
    }
    run = mlflow_client(get_settings()).get_run(check_for_run(fresh, dr.run_id)["mlflow_run_id"])
    assert run.data.tags[C.TAG_MONITOR_DECISION] == NO_CHAMPION and run.info.status == "FINISHED"
    assert C.TAG_WINDOW_CONSUMED not in run.data.tags
