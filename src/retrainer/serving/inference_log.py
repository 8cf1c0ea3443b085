"""What one row of the inference log and of the feedback log holds, per model version.

Each version's log schema is its signature's columns (with their types) plus the metadata
columns the monitor reads; feedback labels take the type of the version's classes (a double for
regression). The rows themselves are written by `durable_log`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from retrainer.serving.durable_log import DurableLog, Schema, now_iso
from retrainer.serving.model import LoadedModel

__all__ = [
    "BatchedParquetLog",
    "feedback_schema",
    "inference_records",
    "inference_schema",
    "shadow_schema",
    "now_iso",
]


def inference_schema(handle: LoadedModel) -> Schema:
    cols = [(c.name, c.type) for c in handle.columns]
    meta = [
        ("_request_id", "string"),
        ("_client_request_id", "string"),
        ("_row", "long"),
        ("_ts", "string"),
        ("_model_version", "string"),
        ("_prediction", handle.label_type),
    ]
    if handle.classes is not None:
        meta.append(("_score", "double"))
    meta.append(
        ("_role", "string")
    )  # champion or challenger (a canary's share); older files lack it
    return cols + meta


def shadow_schema(champion: LoadedModel, challenger: LoadedModel) -> Schema:
    """One mirrored row: both versions' answers, joinable to the feedback on (request, row)."""
    schema = [
        ("_request_id", "string"),
        ("_row", "long"),
        ("_ts", "string"),
        ("_champion_version", "string"),
        ("_challenger_version", "string"),
        ("_champion_prediction", champion.label_type),
        ("_prediction", challenger.label_type),
    ]
    if champion.classes is not None and challenger.classes is not None:
        schema += [("_champion_score", "double"), ("_score", "double")]
    return schema


def shadow_records(
    request_id: str,
    champion: tuple[str, list[Any], list[dict[str, float]] | None],
    challenger: tuple[str, list[Any], list[dict[str, float]] | None],
    ts: str,
) -> list[dict[str, Any]]:
    """One mirrored request's rows: (version, labels, probabilities) of each side."""
    (their_version, theirs, their_probs), (our_version, ours, our_probs) = champion, challenger
    both = their_probs is not None and our_probs is not None
    records = []
    for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        rec = {
            "_request_id": request_id,
            "_row": i,
            "_ts": ts,
            "_champion_version": their_version,
            "_challenger_version": our_version,
            "_champion_prediction": a,
            "_prediction": b,
        }
        if both:
            assert their_probs is not None and our_probs is not None
            rec["_champion_score"] = their_probs[i][str(a)]
            rec["_score"] = our_probs[i][str(b)]
        records.append(rec)
    return records


def feedback_schema(handle: LoadedModel) -> Schema:
    return [
        ("_request_id", "string"),
        ("_row", "long"),
        ("_label", handle.label_type),
        ("_ts", "string"),
        ("_answered", "string"),  # when the labelled request was answered (None: not known)
    ]


def inference_records(
    handle: LoadedModel,
    request_id: str,
    client_id: str | None,
    rows: list[dict[str, Any]],
    labels: list[Any],
    probs: list[dict[str, float]] | None,
    ts: str,
    role: str = "champion",
) -> list[dict[str, Any]]:
    records = []
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        rec = dict(row)
        rec["_request_id"] = request_id
        rec["_client_request_id"] = client_id
        rec["_row"] = i
        rec["_ts"] = ts
        rec["_model_version"] = handle.version
        rec["_prediction"] = label
        if probs is not None:
            rec["_score"] = probs[i][str(label)]
        rec["_role"] = role
        records.append(rec)
    return records


class BatchedParquetLog:
    """Write log rows as serving does, outside serving (tools and tests): a private spool."""

    def __init__(self, root: str, kind: str = "requests") -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="retrainer-log-")
        self._log = DurableLog(root, kind, Path(self._dir.name), compact_seconds=3600)
        self._log.open()

    def append(self, model: str, records: list[dict[str, Any]]) -> None:
        version = str(records[0].get("_model_version", "")) if records else ""
        self._log.append(model, version, None, records)

    def flush(self) -> int:
        """Write what was appended so far to the log's destination (Parquet); rows written."""
        return self._log.flush().written

    def close(self) -> int:
        written = self._log.close().written
        self._dir.cleanup()
        return written
