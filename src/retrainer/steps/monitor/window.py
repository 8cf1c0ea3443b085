"""Which logged rows a check reads: since the last decided check, snapshot for the next steps."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from retrainer import constants as C
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.spec import ModelSpec
from retrainer.steps.monitor.checks import find_checks, monitor_run, parse_ts

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

META_COLUMNS = (
    "_request_id",
    "_client_request_id",
    "_row",
    "_ts",
    "_model_version",
    "_prediction",
    "_score",
    "_role",
)
CHAMPION = "champion"
LATE_DAYS = 7  # how long after it was answered a row arriving in the log is still counted
S3_SETTLE_SECONDS = 5  # S3 object times are whole seconds, from the store's clock


def _days(start: datetime, end: datetime) -> list[str]:
    day = start.date()
    out = []
    while day <= end.date():
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def read_log(
    root: str, model: str, start: datetime | None, end: datetime, arrived: bool = False
) -> pd.DataFrame:
    """Rows of a date-partitioned log with start <= _ts < end (columns may differ by file).

    `arrived`: instead, every row whose file reached the log in [start, end), whenever it was
    answered: what a monitor window reads, so that rows serving could not write at once (an S3
    outage, a killed replica's spool adopted later) count in the window in which they arrive
    instead of falling before every window. Their day partitions are looked for up to
    `LATE_DAYS` before `start`."""
    import pandas as pd

    df = read_files(log_files(root, model, start, end, arrived))
    if arrived or df.empty:
        return df
    ts = pd.to_datetime(df["_ts"], utc=True, errors="coerce", format="ISO8601")
    keep = ts < pd.Timestamp(end)
    if start is not None:
        keep &= ts >= pd.Timestamp(start)
    return df[keep.to_numpy()].reset_index(drop=True)


def log_files(
    root: str, model: str, start: datetime | None, end: datetime, arrived: bool
) -> list[str]:
    """The files `read_log` reads: by day partition, or (`arrived`) by when each landed."""
    from retrainer.errors import DataError
    from retrainer.stores import storage

    base = storage.join(root, model)
    timed: list[tuple[str, float]] = []
    if start is None:
        with contextlib.suppress(DataError):  # nothing logged yet
            timed = storage.list_data_files_timed(base)
    else:
        first = start - timedelta(days=LATE_DAYS) if arrived else start
        for day in _days(first, end):
            try:
                timed += storage.list_data_files_timed(storage.join(base, f"date={day}"))
            except DataError:
                continue
    if not arrived:
        return [f for f, _ in timed]
    low = start.timestamp() if start is not None else float("-inf")
    return [f for f, t in timed if low <= t < end.timestamp()]


def log_frames(files: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """Each log file with its rows, one file at a time; a torn or corrupt part is skipped, logged."""
    from retrainer.errors import DataError
    from retrainer.stores import storage

    for f in files:
        try:
            yield f, storage._parse(storage.read_bytes(f), f)
        except DataError as exc:  # a torn or corrupt part never stops the check
            log.warning("skipping unreadable log file %s: %s", f, exc)


def read_files(
    files: list[str], keep: Callable[[pd.DataFrame], pd.DataFrame] | None = None
) -> pd.DataFrame:
    """The log files' rows in one frame (`keep`: each file's rows to keep, as it is read)."""
    import pandas as pd

    frames = [f for _, f in _kept_frames(files, keep) if len(f)]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def _kept_frames(
    files: list[str], keep: Callable[[pd.DataFrame], pd.DataFrame] | None
) -> Iterator[tuple[str, pd.DataFrame]]:
    """`log_frames`, each cut to the rows `keep` keeps (all without it)."""
    for uri, frame in log_frames(files):
        yield uri, keep(frame) if keep is not None else frame


def sample_files(
    files: list[str],
    cap: int,
    seed: int,
    keep: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, int]:
    """At most `cap` of the files' rows (those `keep` keeps), a uniform sample without
    replacement, and how many there are in all (`sample_frames`). Each file's random keys come
    from the seed and the file's name: a retry that reads one file more (or one fewer, torn)
    draws the same keys for every other file."""
    import zlib

    import numpy as np

    def keyed() -> Iterator[tuple[pd.DataFrame, Any]]:
        for uri, frame in _kept_frames(files, keep):
            rng = np.random.default_rng([seed, zlib.crc32(uri.encode())])
            yield frame, rng.random(len(frame))

    return sample_frames(keyed(), cap)


def row_pairs(frame: pd.DataFrame) -> pd.MultiIndex:
    """Each logged row's identity: (_request_id, _row)."""
    import pandas as pd

    return pd.MultiIndex.from_arrays(
        [frame["_request_id"].astype(str), frame["_row"].astype("int64")]
    )


def row_keys(frame: pd.DataFrame) -> Any:
    """A key in [0, 1) per logged row from its (_request_id, _row) alone: every label given for
    a row shares it, so a sample keeps all of a row's labels (its corrections) or none."""
    import numpy as np
    import pandas as pd

    h = pd.util.hash_pandas_object(row_pairs(frame), index=False).to_numpy(dtype=np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_frames(frames: Iterable[tuple[pd.DataFrame, Any]], cap: int) -> tuple[pd.DataFrame, int]:
    """At most `cap` of the frames' rows, a uniform sample without replacement, and how many rows
    there are in all. Bottom-k sampling: each frame comes with a key in [0, 1) per row (random,
    or of the row's content) and the `cap` rows with the smallest keys are kept, pruned as frames
    arrive one at a time: memory holds the sample, what was taken since the last pruning (at
    most as much again) and one frame, however much was logged. Rows whose keys tie at the cut
    are all kept. The same frames and keys give the same rows, in the order they came."""
    import numpy as np
    import pandas as pd

    parts: list[pd.DataFrame] = []
    held = total = 0
    bound = 1.0  # a row whose key is over the cap-th smallest so far cannot be kept
    for n, (frame, keys) in enumerate(frames):
        total += len(frame)
        taken = keys <= bound
        if not taken.any():
            continue
        at = n * (1 << 32) + np.flatnonzero(taken)  # frame, then row: the order they came
        parts.append(frame[taken].assign(_sample_key=keys[taken], _sample_at=at))
        held += len(parts[-1])
        if held > 2 * cap:  # pruned now and then, not after every (small) frame
            kept = _smallest(pd.concat(parts, ignore_index=True, sort=False), cap)
            parts, held, bound = [kept], len(kept), float(kept["_sample_key"].max())
    if not parts:
        return pd.DataFrame(), total
    kept = pd.concat(parts, ignore_index=True, sort=False) if len(parts) > 1 else parts[0]
    kept = _smallest(kept, cap).sort_values("_sample_at", kind="stable").reset_index(drop=True)
    return kept.drop(columns=["_sample_key", "_sample_at"]), total


def _smallest(kept: pd.DataFrame, cap: int) -> pd.DataFrame:
    return kept.nsmallest(cap, "_sample_key", keep="all") if len(kept) > cap else kept


def read_days(
    root: str,
    model: str,
    days: set[date],
    keep: Callable[[pd.DataFrame], pd.DataFrame],
    before: datetime,
) -> pd.DataFrame:
    """The rows `keep` keeps of whole day partitions of a log, each read once, from the files
    that reached the log before `before` (a later one belongs to a later window)."""
    from retrainer.errors import DataError
    from retrainer.stores import storage

    files: list[str] = []
    for day in sorted(days):
        try:
            timed = storage.list_data_files_timed(
                storage.join(root, model, f"date={day.isoformat()}")
            )
        except DataError:  # nothing logged that day, or pruned
            continue
        files += [f for f, t in timed if t < before.timestamp()]
    return read_files(files, keep)


def last_labels(feedback: pd.DataFrame) -> pd.DataFrame:
    """One label per answered row: the one given last by its `_ts`. Not by file order: files
    sort by replica and segment, so another replica's older label could override a correction."""
    import pandas as pd

    ts = pd.to_datetime(feedback["_ts"], utc=True, errors="coerce", format="ISO8601")
    ordered = feedback.assign(_label_ts=ts).sort_values(
        "_label_ts", kind="stable", na_position="first"
    )
    return ordered.drop_duplicates(["_request_id", "_row"], keep="last").drop(columns="_label_ts")


def champion_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows the champion answered: drift and label-free estimates describe the champion,
    not a canary's challenger. Files written before the `_role` column count as the champion's."""
    if "_role" not in df.columns:
        return df
    role = df["_role"]
    keep = role.isna() | (role == CHAMPION)
    return df[keep.to_numpy()].reset_index(drop=True)


def window_start(
    client: MlflowClient, spec: ModelSpec, settings: Settings, exclude_run: str = ""
) -> datetime | None:
    """Where the decided checks' windows end (None: from the beginning of the log): the latest
    end among the last few, not the end of the last one started (a re-run of an old DAG run)."""
    runs = find_checks(client, spec, settings, f"tags.`{C.TAG_WINDOW_CONSUMED}` = 'true'", 10)
    ends = [
        parse_ts(run.data.tags.get(C.TAG_WINDOW_END))
        for run in runs
        if run.info.run_id != exclude_run
    ]
    return max((e for e in ends if e is not None), default=None)


def settle_seconds(settings: Settings) -> int:
    """How long before its check a window ends: RETRAINER_LOG_SETTLE_SECONDS, else 0 for a log
    on local disk and S3_SETTLE_SECONDS on S3."""
    from retrainer.stores import storage

    if settings.log_settle_seconds is not None:
        return settings.log_settle_seconds
    return S3_SETTLE_SECONDS if storage.is_s3(settings.inference_log_root) else 0


def read_window(
    spec: ModelSpec, ctx: RunContext, settings: Settings | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Pick the window (since the last decided check), snapshot its rows for the next steps.

    A retried task finds its MLflow run by the DAG run id and reuses the bounds it recorded.
    """
    from retrainer.stores import storage
    from retrainer.stores.tracking import mlflow_client, run_key, run_tags

    settings = settings or get_settings()
    client = mlflow_client(settings)
    run_id = monitor_run(
        client, spec, ctx, settings, run_tags(spec, ctx) | {C.TAG_STAGE: "monitor"}
    )
    run = client.get_run(run_id)
    end = parse_ts(run.data.tags.get(C.TAG_WINDOW_END))
    if end is None:
        end = (now or datetime.now(UTC)) - timedelta(seconds=settle_seconds(settings))
        start = window_start(client, spec, settings, exclude_run=run_id)
        if start is not None and end < start:  # checks closer together than the settle time
            end = start
        client.set_tag(run_id, C.TAG_WINDOW_END, end.isoformat())
        client.set_tag(run_id, C.TAG_WINDOW_START, start.isoformat() if start else "")
    else:
        start = parse_ts(run.data.tags.get(C.TAG_WINDOW_START))
    # by arrival: a row logged late (an outage, an adopted spool) counts in the window it lands in
    files = log_files(settings.inference_log_root, spec.name, start, end, arrived=True)
    cap = spec.monitoring.max_rows
    df, logged = sample_files(files, cap, int(end.timestamp() * 1000), champion_rows)
    uri = storage.join(settings.work_root, spec.name, run_key(ctx), "window.parquet")
    if len(df):
        storage.write_table(_parquet_safe(df), uri)
    window = {
        "start": start.isoformat() if start else None,
        "end": end.isoformat(),
        "rows": int(len(df)),
        "uri": uri if len(df) else None,
        "served_versions": sorted({str(v) for v in df.get("_model_version", [])}),
    }
    if logged > cap:  # a long window (a paused monitor, the first check): a bounded sample
        window |= {"logged_rows": logged, "max_rows": cap}
        log.warning(
            "the window holds %d logged rows, more than monitoring.max_rows (%d): the check "
            "reads a uniform random sample of %d of them (raise max_rows to read more)",
            logged,
            cap,
            cap,
        )
    log.info(
        "window %s .. %s: %d logged rows of %s",
        window["start"] or "(beginning)",
        window["end"],
        len(df),
        spec.name,
    )
    _prune_windows(spec, settings, uri)
    return {
        "mlflow_run_id": run_id,
        "experiment_id": str(run.info.experiment_id),
        "window": window,
    }


def _prune_windows(spec: ModelSpec, settings: Settings, current: str) -> None:
    """Earlier checks' window snapshots past RETRAINER_SNAPSHOT_DAYS go (unattended, one a
    check would pile up for good); a failure to delete never stops this check."""
    from retrainer.errors import RetrainerError
    from retrainer.steps.snapshots import prune_windows

    try:
        gone = prune_windows(spec, settings, current=current)
    except (RetrainerError, OSError) as exc:
        log.warning("could not delete old window snapshots of %s: %s", spec.name, exc)
        return
    if gone:
        log.info(
            "deleted %d window snapshot(s) of %s older than %d days (RETRAINER_SNAPSHOT_DAYS)",
            len(gone),
            spec.name,
            max(settings.snapshot_days, 1),
        )


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding mixed types (a schema change in the traffic) as strings."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col].dropna().head(10_000)}
            if len(kinds) > 1:
                out[col] = out[col].map(lambda v: v if v is None or v != v else str(v))
    return out
