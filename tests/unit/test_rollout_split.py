"""The rollout's pure parts: the canary split, the shadow's comparison, and the monitor's window
reading a log folder that mixes files from before and after the `_role` column."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from retrainer.serving.inference_log import BatchedParquetLog
from retrainer.serving.rollout import MirrorStats, compare, route_value, routed
from retrainer.steps.monitor.window import META_COLUMNS, champion_rows, read_log


def test_the_split_is_the_contracts_hash_rule_and_only_grows_with_the_fraction():
    ids = [f"customer-{i}" for i in range(20_000)]
    for value in ids[:200]:
        share = int(hashlib.sha256(value.encode()).hexdigest()[:8], 16) / 2**32
        assert routed(value, 0.3) == (share < 0.3)
    low = {v for v in ids if routed(v, 0.05)}
    mid = {v for v in ids if routed(v, 0.25)}
    assert low < mid and all(routed(v, 1.0) for v in ids)
    assert len(mid) / len(ids) == pytest.approx(0.25, abs=0.02)


def test_the_split_hashes_the_key_of_the_first_row_else_the_request_id():
    rows = [{"customer_id": 17, "Age": 30}, {"customer_id": 18, "Age": 40}]
    assert route_value("customer_id", rows, "rid") == "17"
    assert route_value(None, rows, "rid") == "rid"
    assert route_value("customer_id", [{"customer_id": None}], "rid") == "rid"
    assert route_value("customer_id", [], "rid") == "rid"


def test_compare_counts_agreement_by_class_and_relative_difference():
    labels = MirrorStats()
    compare(["good", "bad", "good", "good"], ["good", "good", "bad", "good"], True, labels)
    assert labels.as_dict() == {
        "rows": 4,
        "dropped": 0,
        "agree": 2,
        "disagree_by_class": {"bad->good": 1, "good->bad": 1},
        "mean_abs_rel_diff": None,
    }
    values = MirrorStats()
    compare([100.0, -50.0, 0.0], [110.0, -50.0, 0.0], False, values)
    assert values.as_dict()["mean_abs_rel_diff"] == pytest.approx(0.1 / 3)
    assert values.agree == 0 and values.rows == 3


def test_the_window_reads_old_and_new_files_and_keeps_the_champions_rows(tmp_path):
    now = datetime.now(UTC)
    ts = (now - timedelta(minutes=5)).isoformat()

    def rows(n: int, version: str, role: str | None) -> list[dict]:
        out = []
        for i in range(n):
            rec = {"Age": 30 + i, "_request_id": f"{version}-{role}-{i}", "_row": 0, "_ts": ts}
            rec |= {"_model_version": version, "_prediction": "good", "_score": 0.9}
            if role is not None:
                rec["_role"] = role
            out.append(rec)
        return out

    writer = BatchedParquetLog(str(tmp_path))
    writer.append("m", rows(3, "1", None))  # written before the _role column existed
    writer.flush()
    writer.append("m", rows(4, "1", "champion") + rows(2, "2", "challenger"))
    writer.close()
    assert len(list(tmp_path.rglob("*.parquet"))) == 2
    df = read_log(str(tmp_path), "m", None, now)
    assert len(df) == 9
    kept = champion_rows(df)
    assert len(kept) == 7 and set(kept["_model_version"]) == {"1"}
    assert "_role" in META_COLUMNS  # never read as a feature by the drift checks
    old_only = read_log(str(tmp_path), "m", None, now).drop(columns=["_role"])
    assert len(champion_rows(old_only)) == 9
