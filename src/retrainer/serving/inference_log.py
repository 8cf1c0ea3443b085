"""The inference log: every prediction, written in batches to Parquet, off the response path.

Records go into a bounded in-memory buffer; a background thread writes them to
`<root>/<model>/date=YYYY-MM-DD/part-<time>-<n>.parquet` (local or s3://) every few seconds or
every few thousand rows, and once more on shutdown. If storage stalls and the buffer fills, the
oldest records are dropped and counted, so memory stays bounded and requests never wait.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


def partition_uri(root: str, model: str, day: str, kind: str = "part") -> str:
    from retrainer.stores import storage

    name = f"{kind}-{datetime.now(UTC).strftime('%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    return storage.join(root, model, f"date={day}", name)


class BatchedParquetLog:
    """Thread-safe append; a daemon thread flushes. Shared by the inference and feedback logs."""

    def __init__(
        self,
        root: str,
        kind: str = "part",
        flush_rows: int = 5000,
        flush_seconds: float = 5.0,
        max_buffer: int = 200_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.root = root
        self.kind = kind
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._buffer: deque[tuple[str, dict[str, Any]]] = deque(maxlen=max_buffer)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._on_drop = on_drop
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name=f"{kind}-log-flusher", daemon=True)
        self._thread.start()

    def append(self, model: str, records: list[dict[str, Any]]) -> None:
        with self._lock:
            overflow = len(self._buffer) + len(records) - (self._buffer.maxlen or 0)
            if overflow > 0:
                self.dropped += overflow
                if self._on_drop:
                    self._on_drop(overflow)
            self._buffer.extend((model, r) for r in records)
            full = len(self._buffer) >= self.flush_rows
        if full:
            self._wake.set()

    def _take(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            items = list(self._buffer)
            self._buffer.clear()
        return items

    def flush(self) -> int:
        """Write everything buffered now; returns rows written."""
        import pandas as pd

        from retrainer.stores import storage

        items = self._take()
        if not items:
            return 0
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for model, rec in items:
            day = str(rec.get("_ts", ""))[:10] or datetime.now(UTC).strftime("%Y-%m-%d")
            groups.setdefault((model, day), []).append(rec)
        for (model, day), recs in groups.items():
            try:
                storage.write_table(
                    pd.DataFrame.from_records(recs), partition_uri(self.root, model, day, self.kind)
                )
                self.written += len(recs)
            except Exception:  # storage down: keep serving; the rows are lost and counted
                log.exception("could not write %d %s records for %s", len(recs), self.kind, model)
                self.dropped += len(recs)
                if self._on_drop:
                    self._on_drop(len(recs))
        return len(items)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def now_ms() -> float:
    return time.time() * 1000
