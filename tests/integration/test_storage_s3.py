"""storage on a real S3-compatible HTTP endpoint (moto's server on loopback), through boto3."""

import pandas as pd
import pytest

from retrainer.errors import DataError, TransientError
from retrainer.stores import storage

pytestmark = pytest.mark.integration


def frame(n=5, start=0):
    return pd.DataFrame({"x": range(start, start + n), "c": ["a", "b", "a", "b", "a"][:n]})


def test_single_object_round_trip(s3_bucket):
    uri = f"s3://{s3_bucket}/data/batch.parquet"
    storage.write_table(frame(), uri)
    assert storage.exists(uri)
    got = storage.read_table(uri)
    pd.testing.assert_frame_equal(got, frame())
    assert storage.table_digest(got) == storage.table_digest(frame())


def test_prefix_reads_every_batch_and_picks_up_new_ones(s3_bucket):
    prefix = f"s3://{s3_bucket}/landing"
    storage.write_table(frame(5, 0), f"{prefix}/2026-01-01.csv")
    storage.write_table(frame(5, 5), f"{prefix}/2026-01-02.parquet")
    storage.write_bytes(f"{prefix}/_SUCCESS", b"")
    assert len(storage.read_table(prefix)) == 10
    storage.write_table(frame(5, 10), f"{prefix}/2026-01-03.csv")
    got = storage.read_table(prefix + "/")
    assert list(got["x"]) == list(range(15))


def test_mismatched_batch_columns_are_named(s3_bucket):
    prefix = f"s3://{s3_bucket}/mixed"
    storage.write_table(frame(), f"{prefix}/a.csv")
    storage.write_table(frame().rename(columns={"c": "colour"}), f"{prefix}/b.csv")
    with pytest.raises(
        DataError, match=r"b.csv: its columns differ .*\(missing \['c'\], extra \['colour'\]"
    ):
        storage.read_table(prefix)


def test_remove_prefix(s3_bucket):
    prefix = f"s3://{s3_bucket}/tmp"
    storage.write_bytes(f"{prefix}/a.txt", b"1")
    storage.write_bytes(f"{prefix}/b.txt", b"2")
    storage.remove(prefix)
    assert not storage.exists(prefix)
    storage.remove(prefix)  # missing is fine


def test_missing_bucket_and_empty_prefix_are_clear(s3_endpoint, s3_bucket):
    with pytest.raises(DataError, match="no-such-bucket.*bucket does not exist"):
        storage.read_table("s3://no-such-bucket/data/")
    with pytest.raises(DataError, match="no csv or parquet objects under this prefix"):
        storage.read_table(f"s3://{s3_bucket}/nothing-here/")


def test_unreachable_endpoint_is_transient(monkeypatch):
    monkeypatch.setenv("RETRAINER_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(TransientError, match="cannot reach the S3 endpoint"):
        storage.read_table("s3://bucket/data.csv")


def test_retrain_validates_data_from_s3(s3_bucket, airflow_db):
    """The spec's data can live in a bucket: validate_data reads the prefix through boto3."""
    from pathlib import Path

    from retrainer.config.settings import RunContext, get_settings
    from retrainer.spec import load_spec
    from retrainer.steps import retrain as pipeline

    spec = load_spec(get_settings().models_dir / "credit_it.yaml")
    credit = pd.read_csv(Path(__file__).resolve().parents[2] / "examples/credit/credit_data.csv")
    storage.write_table(credit.iloc[:2000], f"s3://{s3_bucket}/credit/batch-1.parquet")
    storage.write_table(credit.iloc[2000:], f"s3://{s3_bucket}/credit/batch-2.csv")
    ctx = RunContext(dag_id="credit_it_retrain", run_id="s3-test-run")
    out = pipeline.validate_data(spec, ctx, data_uri=f"s3://{s3_bucket}/credit/")
    assert out["rows"] == len(credit)
    assert out["source"] == f"s3://{s3_bucket}/credit/"


def test_a_listing_gives_each_objects_arrival_time(s3_bucket, tmp_path):
    """What the monitor's window goes by: when each log file landed, from the same listing."""
    import time

    prefix = f"s3://{s3_bucket}/log/m/date=2026-01-01"
    before = time.time()
    storage.write_table(frame(), f"{prefix}/requests-a.parquet")
    storage.write_bytes(f"{prefix}/.requests-b.parquet.tmp", b"x")  # not visible
    timed = storage.list_data_files_timed(f"s3://{s3_bucket}/log/m")
    assert [f for f, _ in timed] == [f"{prefix}/requests-a.parquet"]
    assert before - 2 <= timed[0][1] <= time.time() + 2  # moto's clock is this machine's
    single = storage.list_data_files_timed(f"{prefix}/requests-a.parquet")
    assert single == timed
    local = tmp_path / "date=2026-01-01"
    local.mkdir()
    storage.write_table(frame(), str(local / "requests-a.parquet"))
    (timed_local,) = storage.list_data_files_timed(str(tmp_path))
    assert timed_local == (
        str(local / "requests-a.parquet"),
        (local / "requests-a.parquet").stat().st_mtime,
    )


def test_old_window_snapshots_go_from_a_bucket_and_nothing_else(s3_bucket):
    from datetime import UTC, datetime, timedelta

    from retrainer.config.settings import Settings, get_settings
    from retrainer.spec import load_spec
    from retrainer.steps.snapshots import prune_windows

    spec = load_spec(get_settings().models_dir / "credit_it.yaml")
    work = f"s3://{s3_bucket}/work"
    settings = Settings(home=get_settings().home, work_uri=work, snapshot_days=30)
    home = f"{work}/{spec.name}"
    kept = [
        f"{home}/retrain-1/data.parquet",
        f"{home}/window.parquet",
        f"{work}/other/c/window.parquet",
        f"{home}/check-1/window.parquet/part-0.parquet",  # only that exact key goes
    ]
    old = [f"{home}/check-1/window.parquet", f"{home}/check-2/window.parquet"]
    for uri in kept + old:
        storage.write_table(frame(), uri)
    assert prune_windows(spec, settings) == []  # all written just now
    later = datetime.now(UTC) + timedelta(days=31)
    assert sorted(prune_windows(spec, settings, now=later)) == old
    assert storage.list_data_files(work) == sorted(kept)
