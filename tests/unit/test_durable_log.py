"""The durable log on its own: spool, recovery, compaction with one schema, quarantine, bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from retrainer.serving.durable_log import DurableLog, SpoolFull, now_iso

SCHEMA = [("Age", "long"), ("Home", "string"), ("_request_id", "string"), ("_ts", "string")]


def rows(n: int, start: int = 0, **over) -> list[dict]:
    return [
        {"Age": 30 + i, "Home": "rent", "_request_id": f"r{start + i}", "_ts": now_iso(), **over}
        for i in range(n)
    ]


def parquet_rows(root: Path, model: str = "m") -> list[dict]:
    out = []
    for f in sorted((root / model).rglob("*.parquet")):
        out += pq.read_table(f).to_pylist()
    return out


def test_rows_spooled_then_compacted_with_the_version_schema(tmp_path):
    log = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    log.open()
    log.append("m", "1", SCHEMA, rows(3))
    log.append("m", "1", SCHEMA, rows(2, 3))
    assert log.bytes > 0 and not list((tmp_path / "dest").rglob("*.parquet"))
    result = log.flush()
    assert (result.written, result.quarantined) == (5, 0)
    files = list((tmp_path / "dest" / "m").rglob("*.parquet"))
    assert len(files) == 1 and files[0].parent.name.startswith("date=")
    table = pq.read_table(files[0])
    assert [str(t) for t in table.schema.types] == ["int64", "string", "string", "string"]
    assert log.bytes == 0
    log.close()


@pytest.mark.parametrize("processes", [False, True], ids=["thread", "child process"])
def test_a_poison_row_is_quarantined_and_the_rest_written(tmp_path, processes):
    log = DurableLog(
        str(tmp_path / "dest"),
        "requests",
        tmp_path / "spool",
        compact_seconds=3600,
        processes=processes,
    )
    log.open()
    good = rows(36)
    poison = rows(1, 99, Age=2**63)  # cannot be held by int64: only this row is set aside
    log.append("m", "1", SCHEMA, good[:20] + poison + good[20:])
    result = log.flush()
    log.close()
    assert (result.written, result.quarantined) == (36, 1)
    assert sorted(r["_request_id"] for r in parquet_rows(tmp_path / "dest")) == sorted(
        r["_request_id"] for r in good
    )
    (quarantined,) = (tmp_path / "dest" / "_quarantine" / "m").rglob("*.jsonl")
    text = quarantined.read_text()
    assert '"r99"' in text and "reason" in text and "int" in text.lower()


def test_a_killed_process_leaves_its_rows_to_the_next_one(tmp_path):
    """Rows appended by a process that is SIGKILLed are compacted by the next one."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from retrainer.serving.durable_log import DurableLog, now_iso
        log = DurableLog({str(tmp_path / "dest")!r}, "requests", Path({str(tmp_path / "spool")!r}),
                         compact_seconds=3600)
        log.open()
        for i in range(100):
            log.append("m", "1", None, [{{"i": i, "_ts": now_iso()}}])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9, proc.stderr
    log = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    log.open()  # adopts the dead process's slot
    assert log.flush().written == 100
    log.close()
    assert sorted(r["i"] for r in parquet_rows(tmp_path / "dest")) == list(range(100))


def test_a_torn_tail_is_ignored_and_the_rest_recovered(tmp_path):
    log = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    log.open()
    log.append("m", "1", SCHEMA, rows(4))
    seg = log._active
    log._stop.set()
    os.close(log._fd)
    log._fd = -1
    os.close(log._slot_lock_fd)
    with open(seg, "ab") as fh:  # a write cut by a power loss
        fh.write(b"\x10\x00\x00\x00garbage")
    again = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool")
    again.open()
    assert again.flush().written == 4
    again.close()


def test_two_processes_never_share_a_spool_slot(tmp_path):
    a = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    b = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    a.open()
    b.open()
    assert a._slot != b._slot
    a.append("m", "1", SCHEMA, rows(2))
    b.append("m", "1", SCHEMA, rows(3, 10))
    assert a.close().written == 2 and b.close().written == 3


def test_at_the_bound_appends_are_refused_and_near_it_reported(tmp_path, caplog):
    states = []
    log = DurableLog(
        "s3://unreachable-bucket-for-test/log",
        "requests",
        tmp_path / "spool",
        max_bytes=4000,
        warn_fraction=0.5,
        compact_seconds=3600,
        on_state=lambda s, n: states.append(s),
    )
    log.open()
    with pytest.raises(SpoolFull, match="bound is 4000"):
        for i in range(200):
            log.append("m", "1", SCHEMA, rows(1, i))
    assert "near_limit" in states and log.state == "full"
    assert "spool near limit" in caplog.text
    log._stop.set()
    os.close(log._fd)
    log._fd = -1


def test_unreachable_destination_keeps_rows_until_it_is_back(tmp_path):
    blocked = tmp_path / "dest"
    blocked.write_text("a file where the folder should be")  # every write fails
    log = DurableLog(str(blocked), "requests", tmp_path / "spool", compact_seconds=3600)
    log.open()
    log.append("m", "1", SCHEMA, rows(5))
    result = log.flush()
    assert result.written == 0 and result.pending == 1 and log.last_error
    blocked.unlink()
    result = log.flush()
    assert result.written == 5 and result.pending == 0
    log.close()


def test_retention_prunes_old_day_partitions(tmp_path):
    dest = tmp_path / "dest"
    for day in ("2020-01-01", datetime.now(UTC).date().isoformat()):
        (dest / "m" / f"date={day}").mkdir(parents=True)
        (dest / "_quarantine" / "m" / f"date={day}").mkdir(parents=True)
    log = DurableLog(str(dest), "requests", tmp_path / "spool", retention_days=30)
    assert log.prune(datetime.now(UTC) + timedelta(days=1)) == 2
    assert [p.name for p in (dest / "m").iterdir()] == [f"date={datetime.now(UTC).date()}"]


@pytest.mark.parametrize("cut_fails", [False, True], ids=["cut", "new segment"])
@pytest.mark.parametrize("new_version", [False, True], ids=["rows frame", "schema frame"])
def test_a_failed_append_leaves_no_torn_frame_before_later_rows(
    tmp_path, monkeypatch, cut_fails, new_version
):
    """A full disk lets part of a frame through, then fails: that request gets the error, and
    every later, answered one is still logged (the torn frame used to end the segment there)."""
    import errno

    from retrainer.serving import durable_log

    log = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    log.open()
    log.append("m", "1", SCHEMA, rows(1))
    real_write, calls = os.write, []

    def full_disk(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:7])
        raise OSError(errno.ENOSPC, "No space left on device")

    def no_cut(fd, length):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(durable_log.os, "write", full_disk)
    if cut_fails:
        monkeypatch.setattr(durable_log.os, "ftruncate", no_cut)
    with pytest.raises(OSError, match="No space left"):
        log.append("m", "2" if new_version else "1", SCHEMA, rows(1, 1))
    monkeypatch.undo()
    for i in range(2, 6):
        log.append("m", "2" if new_version else "1", SCHEMA, rows(1, i))
    assert log.flush().written == 5
    ids = sorted(r["_request_id"] for r in parquet_rows(tmp_path / "dest"))
    assert ids == ["r0", "r2", "r3", "r4", "r5"]
    log.close()


def test_the_last_label_given_wins_whichever_replica_logged_it(tmp_path):
    """Two serving replicas log feedback for the same row; files sort by replica (boot time)
    and segment, so the label given last must be found by its time, not by file order."""
    import time

    from retrainer.steps.monitor.window import last_labels, read_log

    dest = str(tmp_path / "dest")
    first = DurableLog(dest, "feedback", tmp_path / "spool-a", compact_seconds=3600)
    first.open()
    time.sleep(0.01)  # booted later: its files sort after the first replica's
    second = DurableLog(dest, "feedback", tmp_path / "spool-b", compact_seconds=3600)
    second.open()
    label = [("_request_id", "string"), ("_row", "long"), ("_label", "string"), ("_ts", "string")]
    second.append(
        "m", "1", label, [{"_request_id": "r1", "_row": 0, "_label": "bad", "_ts": now_iso()}]
    )
    time.sleep(0.01)
    first.append(
        "m", "1", label, [{"_request_id": "r1", "_row": 0, "_label": "good", "_ts": now_iso()}]
    )
    for log in (first, second):
        log.flush()
        log.close()
    fb = read_log(dest, "m", None, datetime.now(UTC) + timedelta(minutes=1))
    assert list(fb["_label"]) == ["good", "bad"]  # file order puts the older label last
    assert list(last_labels(fb)["_label"]) == ["good"]


def test_a_segment_compacted_again_does_not_rewrite_what_it_wrote(tmp_path):
    """A retry of a segment (one of its files failed, or the process died before deleting it)
    must not touch the files already written: the monitor's windows go by when files arrive,
    and a rewrite would count their rows again."""
    import shutil

    from retrainer.serving.durable_log import compact_file
    from retrainer.steps.monitor.window import read_log

    log = DurableLog(str(tmp_path / "dest"), "requests", tmp_path / "spool", compact_seconds=3600)
    log.open()
    log.append("m", "1", SCHEMA, rows(5))
    log.append("m", "2", SCHEMA, rows(3, 5))
    seg = log._active
    (tmp_path / "kept").mkdir()
    kept = tmp_path / "kept" / seg.name  # destination names come from the segment's
    with log._lock:
        log._rotate_locked()
    shutil.copy(seg, kept)
    assert log.flush().written == 8
    log.close()
    files = sorted((tmp_path / "dest" / "m").rglob("*.parquet"))
    before = {f: f.stat().st_mtime_ns for f in files}
    first = datetime.now(UTC)
    time.sleep(0.05)
    assert compact_file(str(kept), str(tmp_path / "dest"), "requests") == (8, 0)
    assert {f: f.stat().st_mtime_ns for f in files} == before
    later = read_log(str(tmp_path / "dest"), "m", first, datetime.now(UTC), arrived=True)
    assert later.empty  # nothing arrived again
