"""A monitor window larger than monitoring.max_rows: a uniform sample read one file at a time."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from retrainer.spec import MonitoringSpec
from retrainer.steps.monitor.window import champion_rows, read_files, sample_files


def write_files(root, count: int, rows: int, width: int = 1) -> list[str]:
    files = []
    for n in range(count):
        frame = pd.DataFrame(
            {
                "file": n,
                "row": np.arange(rows),
                "_role": ["champion" if i % 10 else "challenger" for i in range(rows)],
                **{f"x{k}": np.random.default_rng(n).normal(size=rows) for k in range(width)},
            }
        )
        path = root / f"part-{n:04d}.parquet"
        frame.to_parquet(path)
        files.append(str(path))
    return files


def test_a_uniform_sample_of_every_file_in_logged_order(tmp_path):
    files = write_files(tmp_path, 20, 500)
    sample, total = sample_files(files, 1000, seed=7)
    assert total == 10_000 and len(sample) == 1000
    assert not sample.duplicated(["file", "row"]).any()
    # every file is represented about as its share says (50 each): not only the latest ones
    per_file = sample["file"].value_counts().reindex(range(20), fill_value=0)
    assert per_file.between(25, 80).all(), per_file.to_dict()
    # rows in the middle of a file are as likely as its first ones
    assert 0.35 < (sample["row"] < 250).mean() < 0.65
    # in the order they were logged: by file, then by row
    order = list(zip(sample["file"], sample["row"], strict=True))
    assert order == sorted(order)
    # the same files and seed give the same rows (a retried check); another seed others
    again, _ = sample_files(files, 1000, seed=7)
    pd.testing.assert_frame_equal(sample, again)
    other, _ = sample_files(files, 1000, seed=8)
    assert not other[["file", "row"]].equals(sample[["file", "row"]])


def test_a_retry_that_reads_one_file_more_keeps_every_other_files_draws(tmp_path):
    files = write_files(tmp_path, 20, 500)
    torn, _ = sample_files(files[:7] + files[8:], 1000, seed=7)  # file 7 unreadable at first
    whole, _ = sample_files(files, 1000, seed=7)
    # the extra file's rows can only push rows out, never draw others from the rest
    pairs = set(zip(whole["file"], whole["row"], strict=True))
    before = set(zip(torn["file"], torn["row"], strict=True))
    assert {p for p in pairs if p[0] != 7} <= before
    assert len(before - pairs) < 100  # about 50: file 7's share of the 1,000


def test_read_days_leaves_files_that_landed_after_the_window(tmp_path):
    import os
    import time
    from datetime import UTC, date, datetime

    from retrainer.steps.monitor.window import read_days

    day = tmp_path / "m" / "date=2026-12-01"
    day.mkdir(parents=True)
    now = time.time()
    for name, landed in (("a.parquet", now - 60), ("b.parquet", now + 60)):
        pd.DataFrame({"x": [name]}).to_parquet(day / name)
        os.utime(day / name, (landed, landed))
    got = read_days(
        str(tmp_path),
        "m",
        {date(2026, 12, 1)},
        lambda f: f,
        before=datetime.fromtimestamp(now, UTC),
    )
    assert list(got["x"]) == ["a.parquet"]


def test_under_the_cap_every_row_is_read_as_before(tmp_path):
    files = write_files(tmp_path, 3, 40)
    sample, total = sample_files(files, 1000, seed=1)
    assert total == 120
    pd.testing.assert_frame_equal(sample, read_files(files))


def test_rows_the_filter_drops_are_neither_sampled_nor_counted(tmp_path):
    files = write_files(tmp_path, 5, 200)
    sample, total = sample_files(files, 300, seed=3, keep=champion_rows)
    assert total == 900 and len(sample) == 300
    assert set(sample["_role"]) == {"champion"}


def test_a_torn_file_is_skipped_and_the_rest_sampled(tmp_path, caplog):
    files = write_files(tmp_path, 4, 100)
    (tmp_path / "part-0001.parquet").write_bytes(b"PAR1 torn")
    sample, total = sample_files(files, 50, seed=3)
    assert total == 300 and len(sample) == 50 and 1 not in set(sample["file"])
    assert "skipping unreadable log file" in caplog.text


def test_memory_holds_the_sample_not_the_window(tmp_path):
    files = write_files(tmp_path, 40, 5_000, width=8)

    def peak(read) -> int:
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    everything = peak(lambda: read_files(files))
    sampled = peak(lambda: sample_files(files, 2_000, seed=0))
    # 200,000 rows read whole against a 2,000-row sample read file by file (5,000 rows each)
    assert sampled < everything / 5, (sampled, everything)


def test_max_rows_below_min_rows_is_refused_with_both_values():
    with pytest.raises(ValueError, match=r"max_rows \(100\) must be at least min_rows \(200\)"):
        MonitoringSpec(max_rows=100, min_rows=200)
    assert MonitoringSpec().max_rows == 200_000


def test_content_keys_keep_or_drop_all_of_a_rows_labels():
    from retrainer.steps.monitor.window import row_keys, sample_frames

    def labels(value: str) -> pd.DataFrame:
        return pd.DataFrame(
            {"_request_id": [f"r{i // 10}" for i in range(2000)], "_row": np.arange(2000) % 10}
        ).assign(_label=value)

    # each of 2,000 rows labelled twice (a correction), in separate files
    frames = ((f, row_keys(f)) for f in (labels("first"), labels("fixed")))
    sample, total = sample_frames(frames, 600)
    assert total == 4000 and 600 <= len(sample) <= 602  # ties at the cut are kept whole
    per_row = sample.groupby(["_request_id", "_row"])["_label"].agg(list)
    assert all(sorted(v) == ["first", "fixed"] for v in per_row)
    # the key is the row's own: the same in any frame, spread evenly over [0, 1)
    keys = row_keys(labels("x"))
    assert np.array_equal(keys, row_keys(labels("y").iloc[::-1])[::-1])
    assert 0.45 < keys.mean() < 0.55 and len(np.unique(keys)) == 2000


def test_old_window_snapshots_go_and_nothing_else(tmp_path):
    import os
    import time
    from datetime import UTC, datetime, timedelta

    from credit_spec import credit_spec

    from retrainer.config.settings import Settings
    from retrainer.steps.snapshots import prune_windows

    settings = Settings(home=tmp_path, snapshot_days=30)
    spec = credit_spec({"primary_metric": "roc_auc"})
    home = tmp_path / "work" / spec.name
    old = time.time() - 31 * 86400

    def snapshot(path, written):
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"a": [1]}).to_parquet(path)
        os.utime(path, (written, written))
        return path

    stale = snapshot(home / "check-1" / "window.parquet", old)
    fresh = snapshot(home / "check-2" / "window.parquet", time.time())
    retrain = snapshot(home / "retrain-1" / "data.parquet", old)  # the retention rule's, not ours
    beside = snapshot(home / "retrain-1" / "window.parquet", old)  # a run folder with more in it
    loose = snapshot(home / "window.parquet", old)  # not in a run folder
    other = snapshot(tmp_path / "work" / "another_model" / "c" / "window.parquet", old)
    gone = prune_windows(spec, settings, now=datetime.now(UTC))
    assert sorted(gone) == sorted([str(stale), str(beside)])
    assert not stale.exists() and not stale.parent.exists()  # its emptied folder too
    assert not beside.exists() and retrain.exists() and retrain.parent.is_dir()
    assert fresh.exists() and loose.exists() and other.exists()
    assert prune_windows(spec, settings) == []  # nothing left to do
    # RETRAINER_SNAPSHOT_DAYS=0 still keeps a day, and never the check's own window
    zero = Settings(home=tmp_path, snapshot_days=0)
    assert prune_windows(spec, zero, current=str(fresh)) == [] and fresh.exists()
    later = datetime.now(UTC) + timedelta(days=2)
    assert prune_windows(spec, zero, now=later, current=str(fresh)) == [] and fresh.exists()
    assert prune_windows(spec, zero, now=later) == [str(fresh)]
    assert prune_windows(spec, Settings(home=tmp_path / "nothing-yet")) == []


def test_hand_written_feedback_rows_without_a_whole_row_number_are_skipped(caplog):
    from retrainer.steps.monitor.measure import _labels_of

    frame = pd.DataFrame(
        {
            "_request_id": ["a", "b", 7, "d"],
            "_row": [0, float("nan"), 2, 1.5],
            "_label": ["good"] * 4,
            "_ts": ["2026-12-06T00:00:00+00:00"] * 4,
        }
    )
    got = _labels_of("f.parquet", frame)
    assert list(zip(got["_request_id"], got["_row"], strict=True)) == [("a", 0), ("7", 2)]
    assert str(got["_row"].dtype) == "int64"
    assert "skipping 2 labels in f.parquet whose _row is not a whole number" in caplog.text
    assert _labels_of("g.parquet", frame.drop(columns=["_ts"])).empty
    assert "skipping g.parquet: no _request_id, _row, _label and _ts columns" in caplog.text
