"""The durable inference and feedback log: answered means logged.

Each micro-batch is appended to a local write-ahead spool *before* its requests are answered (one
`write` to a segment file: it survives a crash of the process, and with `fsync` a power loss).
A background thread compacts closed segments to Parquet under the destination root (local or
s3://), one file per segment, model version and day, with that version's one schema (from its
signature); rows that still cannot be written go to a quarantine file with the reason, the rest
are written. A segment is deleted only once every row in it is in the destination, so an S3
outage only makes the spool grow (uploads retry with back-off) and a restart recovers whatever a
killed process left behind. Destination names are derived from the segment, so a retry after a
partial upload rewrites the same files instead of duplicating rows.

Layout (read by the monitor): `<root>/<model>/date=YYYY-MM-DD/<kind>-<segment>-v<version>.parquet`;
quarantine: `<root>/_quarantine/<model>/date=YYYY-MM-DD/<kind>-<segment>-v<version>.jsonl`.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from retrainer.serving.child import child_pool

log = logging.getLogger("retrainer.serving.log")

HEADER = struct.Struct("<II")  # payload length, crc32 of the payload
SEGMENT_MAX_BYTES = 8 * 1024 * 1024
QUARANTINE = "_quarantine"
Schema = list[tuple[str, str]]  # (column, MLflow type), in order


class SpoolFull(RuntimeError):
    """The spool reached its bound: refuse new requests (503) rather than answer unlogged."""


@dataclass
class CompactResult:
    written: int = 0
    quarantined: int = 0
    pending: int = 0  # segments still waiting (destination unreachable)

    def add(self, other: CompactResult) -> None:
        self.written += other.written
        self.quarantined += other.quarantined


@dataclass
class _Group:
    model: str
    version: str
    day: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64]


class DurableLog:
    """One log (`requests` or `feedback`): the spool slot this process owns, and its compactor."""

    def __init__(
        self,
        root: str,
        kind: str,
        spool_dir: Path,
        *,
        max_bytes: int = 1024**3,
        warn_fraction: float = 0.8,
        fsync: bool = False,
        compact_seconds: float = 5.0,
        retention_days: float = 0.0,
        retry_max_seconds: float = 30.0,
        on_written: Callable[[int], None] | None = None,
        on_quarantined: Callable[[int], None] | None = None,
        on_state: Callable[[str, int], None] | None = None,
        processes: bool = False,
    ) -> None:
        self.root = root
        self.kind = kind
        # One spool per destination: a slot adopted after a restart goes where it was meant to.
        self.base = Path(spool_dir) / f"{kind}-{hashlib.sha256(root.encode()).hexdigest()[:10]}"
        self.max_bytes = max_bytes
        self.warn_bytes = int(max_bytes * warn_fraction)
        self.fsync = fsync
        self.compact_seconds = compact_seconds
        self.retention_days = retention_days
        self.retry_max_seconds = retry_max_seconds
        self._on_written = on_written
        self._on_quarantined = on_quarantined
        self._on_state = on_state
        self.processes = processes  # compact in a child process (serving), else in a thread
        self._pool: ProcessPoolExecutor | None = None
        self.written = 0
        self.quarantined = 0
        self.bytes = 0  # spool bytes on disk (closed segments and the active one)
        self.last_error = ""
        self._lock = threading.Lock()  # the active segment
        self._compact_lock = threading.Lock()  # one compaction at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._fd = -1
        self._active: Path | None = None
        self._active_bytes = 0
        self._active_keys: set[tuple[str, str]] = set()
        self._seq = 0
        self._boot = f"{time.time_ns():x}{os.getpid():x}"
        self._slot: Path | None = None
        self._slot_lock_fd = -1
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._pruned_at = 0.0
        self._state = "ok"

    # --- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Claim a spool slot, adopt what dead processes left, start the compactor."""
        self.base.mkdir(parents=True, exist_ok=True)
        self._slot = self._claim_slot()
        adopted = self._adopt_orphans()
        self.bytes = sum(p.stat().st_size for p in self._segments())
        if self.bytes:
            log.warning(
                "%s log: recovering %d bytes of spooled rows (%d segments, %d adopted)",
                self.kind,
                self.bytes,
                len(self._segments()),
                adopted,
            )
        self._new_segment()
        self._report_state()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-log", daemon=True)
        self._thread.start()

    def close(self) -> CompactResult:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=60)
        result = self.flush()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._active and self._active.exists() and self._active.stat().st_size == 0:
                self._active.unlink()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._slot_lock_fd >= 0:
            os.close(self._slot_lock_fd)  # releases the slot
            self._slot_lock_fd = -1
        return result

    # --- the hot path ----------------------------------------------------------------------

    @property
    def state(self) -> str:
        return "full" if self.bytes >= self.max_bytes else self._state

    def check_capacity(self) -> None:
        if self.bytes >= self.max_bytes:
            if self._state != "full":
                self._report_state()
            raise SpoolFull(
                f"the {self.kind} spool holds {self.bytes} bytes, its bound is {self.max_bytes} "
                f"(destination {self.root} unreachable? last error: {self.last_error or 'none'})"
            )

    def append(
        self, model: str, version: str, schema: Schema | None, records: list[dict[str, Any]]
    ) -> None:
        """Spool one micro-batch; when this returns, the rows survive a crash of the process."""
        if not records:
            return
        self.check_capacity()
        body = orjson.dumps(
            {"t": "rows", "m": model, "v": version, "rows": records},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
        with self._lock:
            if self._fd < 0:
                raise RuntimeError(f"the {self.kind} log is closed")
            n = 0
            key = (model, version)
            new_key = key not in self._active_keys
            try:
                if new_key:
                    n += self._write(
                        orjson.dumps({"t": "schema", "m": model, "v": version, "columns": schema})
                    )
                n += self._write(body)
                if self.fsync:
                    os.fsync(self._fd)
            except Exception:
                self._undo_locked()  # the request gets the error; nothing of it stays
                raise
            if new_key:
                self._active_keys.add(key)
            self._active_bytes += n
            self.bytes += n
            if self._active_bytes >= SEGMENT_MAX_BYTES:
                self._rotate_locked()
                self._wake.set()
        if self.bytes >= self.warn_bytes and self._state == "ok" or self.bytes >= self.max_bytes:
            self._report_state()

    def _undo_locked(self) -> None:
        """Cut what a failed append wrote (a frame torn by a full disk, say) off the segment: a
        torn frame in the middle would end the segment there when it is read, and every row
        appended after it, answered, would be lost. If the cut fails too, start a new segment,
        where the torn frame is the old one's harmless last bytes."""
        try:
            os.ftruncate(self._fd, self._active_bytes)
        except OSError:
            log.warning("%s log: could not cut a failed write off %s", self.kind, self._active)
            fd, self._fd = self._fd, -1  # never a closed number another file may reuse
            os.close(fd)
            self._new_segment()

    def _write(self, payload: bytes) -> int:
        frame = HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        view = memoryview(frame)
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
        return len(frame)

    # --- segments ----------------------------------------------------------------------------

    def _claim_slot(self) -> Path:
        n = 0
        while True:
            slot = self.base / f"slot-{n}"
            slot.mkdir(exist_ok=True)
            fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                n += 1
                continue
            self._slot_lock_fd = fd
            return slot

    def _adopt_orphans(self) -> int:
        """Move the segments of slots no live process holds into ours (a killed replica's)."""
        assert self._slot is not None
        moved = 0
        for slot in sorted(self.base.glob("slot-*")):
            if slot == self._slot:
                continue
            try:
                fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                for seg in slot.glob("seg-*.wal"):
                    os.replace(seg, self._slot / seg.name)
                    moved += 1
            finally:
                os.close(fd)
        return moved

    def _segments(self) -> list[Path]:
        assert self._slot is not None
        return sorted(self._slot.glob("seg-*.wal"))

    def _new_segment(self) -> None:
        assert self._slot is not None
        self._seq += 1
        self._active = self._slot / f"seg-{self._boot}-{self._seq:08d}.wal"
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active_bytes = 0
        self._active_keys = set()

    def _rotate_locked(self) -> None:
        if self._active_bytes == 0:
            return
        os.close(self._fd)
        self._new_segment()

    def _closed_segments(self) -> list[Path]:
        with self._lock:
            if self._active_bytes:
                self._rotate_locked()
            active = self._active
        return [p for p in self._segments() if p != active]

    # --- compaction --------------------------------------------------------------------------

    def flush(self) -> CompactResult:
        """Compact every spooled row now (a request for /flush, and on shutdown)."""
        return self._compact(force=True)

    def _compact(self, force: bool = False) -> CompactResult:
        total = CompactResult()
        if not force and time.monotonic() < self._retry_at:
            total.pending = len(self._segments()) - 1
            return total
        with self._compact_lock:
            segments = self._closed_segments()
            for i, seg in enumerate(segments):
                try:
                    total.add(self._compact_segment(seg))
                except Exception as exc:  # destination down: keep the segment, retry later
                    self._failures += 1
                    delay = min(self.retry_max_seconds, 0.5 * 2 ** min(self._failures, 10))
                    self._retry_at = time.monotonic() + delay
                    self.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning(
                        "%s log: could not write %s to %s (%s); %d segment(s) kept in the "
                        "spool, retrying in %.1f s",
                        self.kind,
                        seg.name,
                        self.root,
                        self.last_error,
                        len(segments) - i,
                        delay,
                    )
                    total.pending = len(segments) - i
                    break
            else:
                if self._failures:
                    log.warning("%s log: destination %s reachable again", self.kind, self.root)
                self._failures = 0
                self._retry_at = 0.0
                self.last_error = ""
        self._report_state()
        return total

    def _compact_segment(self, seg: Path) -> CompactResult:
        size = seg.stat().st_size
        if self.processes:
            # In a process of its own, at a lower priority: building Arrow tables from Python
            # rows holds the GIL for tens of milliseconds, which would show in tail latency.
            if self._pool is None:
                self._start_pool()
            assert self._pool is not None
            try:
                written, bad = self._pool.submit(
                    compact_file, str(seg), self.root, self.kind
                ).result()
            except BrokenProcessPool:
                self._pool = None
                raise
        else:
            written, bad = compact_file(str(seg), self.root, self.kind)
        seg.unlink()
        with self._lock:
            self.bytes -= size
        self.written += written
        self.quarantined += bad
        if written and self._on_written:
            self._on_written(written)
        if bad and self._on_quarantined:
            self._on_quarantined(bad)
        return CompactResult(written, bad)

    # --- state, retention --------------------------------------------------------------------

    def _report_state(self) -> None:
        state = "full" if self.bytes >= self.max_bytes else "ok"
        if state == "ok" and self.bytes >= self.warn_bytes:
            state = "near_limit"
        if state != self._state:
            level = logging.INFO if state == "ok" else logging.WARNING
            log.log(
                level,
                "%s log: spool %s (%d of %d bytes; destination %s%s)",
                self.kind,
                state.replace("_", " "),
                self.bytes,
                self.max_bytes,
                self.root,
                f", last error: {self.last_error}" if self.last_error else "",
            )
            self._state = state
        if self._on_state:
            self._on_state(state, self.bytes)

    def prune(self, now: datetime | None = None) -> int:
        """Delete logged partitions (and quarantine) older than the retention; returns how many."""
        if self.retention_days <= 0:
            return 0
        from retrainer.stores import storage

        cutoff = ((now or datetime.now(UTC)) - timedelta(days=self.retention_days)).date()
        removed = 0
        for uri, day in _partitions(self.root):
            if day < cutoff.isoformat():
                storage.remove(uri)
                removed += 1
        if removed:
            log.info(
                "%s log: pruned %d day partition(s) older than %s (retention %g days)",
                self.kind,
                removed,
                cutoff,
                self.retention_days,
            )
        return removed

    def _start_pool(self) -> None:
        """The compaction process, niced (requests come first when the cores are busy) and
        warmed (its imports take seconds: not on the first /flush)."""
        self._pool = child_pool(_child_init)
        self._pool.submit(_child_init).result()

    def _run(self) -> None:
        if self.processes:
            with self._compact_lock:
                try:
                    if self._pool is None:
                        self._start_pool()
                except Exception:
                    log.exception("%s log: could not start the compaction process", self.kind)
        while not self._stop.is_set():
            self._wake.wait(self.compact_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._compact()
                if time.monotonic() - self._pruned_at > 3600:
                    self._pruned_at = time.monotonic()
                    self.prune()
            except Exception:  # never let the compactor die: the spool keeps the rows
                log.exception("%s log: compaction failed; will retry", self.kind)


def _frames(seg: Path) -> Iterator[dict[str, Any]]:
    data = seg.read_bytes()
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        payload = data[pos + HEADER.size : pos + HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        yield orjson.loads(payload)
        pos += HEADER.size + length
    if pos < len(data):  # only a write cut by a power loss (never an answered request)
        log.warning("%s: ignoring %d torn bytes at its end", seg, len(data) - pos)


def to_table(rows: list[dict[str, Any]], schema: Schema | None) -> Any:
    """Rows as an Arrow table with the version's schema (inferred when there is none)."""
    import pyarrow as pa

    from retrainer.serving.signature import arrow_type

    if schema is None:
        return pa.Table.from_pylist(rows)
    return pa.table(
        {name: pa.array([r.get(name) for r in rows], type=arrow_type(t)) for name, t in schema}
    )


def _partitions(root: str) -> Iterator[tuple[str, str]]:
    """(uri, day) of every `date=` folder of every model (and of the quarantine)."""
    from retrainer.stores import storage

    def children(uri: str) -> list[str]:
        if storage.is_s3(uri):
            bucket, key = storage.split_s3(uri)
            prefix = key.rstrip("/") + "/" if key else ""
            names = []
            pages = (
                storage.s3_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            )
            for page in pages:
                names += [
                    p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
                ]
            return names
        path = Path(uri)
        return [p.name for p in path.iterdir() if p.is_dir()] if path.is_dir() else []

    for model in children(root):
        bases = [storage.join(root, model)]
        if model == QUARANTINE:
            bases = [storage.join(root, QUARANTINE, m) for m in children(bases[0])]
        for base in bases:
            for part in children(base):
                if part.startswith("date="):
                    yield storage.join(base, part), part[5:]


def _child_init() -> None:
    import pyarrow.parquet  # noqa: F401

    from retrainer.stores import storage  # noqa: F401


def compact_file(path: str, root: str, kind: str) -> tuple[int, int]:
    """Write one spool segment to the destination: (rows written, rows quarantined)."""
    seg = Path(path)
    schemas: dict[tuple[str, str], Schema | None] = {}
    groups: dict[tuple[str, str, str], _Group] = {}
    for frame in _frames(seg):
        key = (str(frame.get("m")), str(frame.get("v")))
        if frame.get("t") == "schema":
            cols = frame.get("columns")
            schemas[key] = [(str(c[0]), str(c[1])) for c in cols] if cols else None
            continue
        for rec in frame.get("rows") or []:
            day = str(rec.get("_ts", ""))[:10] or datetime.now(UTC).strftime("%Y-%m-%d")
            g = groups.get((*key, day))
            if g is None:
                g = groups[(*key, day)] = _Group(key[0], key[1], day)
            g.rows.append(rec)
    written = quarantined = 0
    for g in groups.values():
        w, q = _write_group(root, kind, g, schemas.get((g.model, g.version)), seg.stem)
        written += w
        quarantined += q
    return written, quarantined


def _write_group(
    root: str, kind: str, g: _Group, schema: Schema | None, stem: str
) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retrainer.stores import storage

    name = f"{kind}-{stem[4:]}-v{_safe(g.version)}"
    uri = storage.join(root, g.model, f"date={g.day}", f"{name}.parquet")
    if storage.exists(uri):
        # Written by an earlier attempt at this segment (one of its files failed, or the process
        # died before deleting it): the same rows, since names come from the segment. Written
        # again it would look newly arrived to the monitor, whose windows go by arrival.
        return len(g.rows), 0
    good: list[dict[str, Any]] = g.rows
    bad: list[dict[str, Any]] = []
    try:
        table = to_table(good, schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        good = []
        for rec in g.rows:  # find the poison rows one by one; the others are written
            try:
                to_table([rec], schema)
                good.append(rec)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                bad.append({"reason": f"{type(exc).__name__}: {exc}"[:500], "row": rec})
        table = to_table(good, schema) if good else None
    if bad:
        aside = storage.join(root, QUARANTINE, g.model, f"date={g.day}", f"{name}.jsonl")
        lines = b"".join(orjson.dumps(b, default=str) + b"\n" for b in bad)
        storage.write_bytes(aside, lines)
        log.error(
            "%s log: %d row(s) of %s v%s could not be written (%s); quarantined in %s",
            kind,
            len(bad),
            g.model,
            g.version,
            bad[0]["reason"],
            aside,
        )
    if table is not None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(uri, buf.getvalue())
    return len(good), len(bad)
