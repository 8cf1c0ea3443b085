"""The retention rule for data snapshots (work/<model>/<run>/): what `retrainer reproduce` needs.

A retrain run's folder (its validated data and test split) is kept while the model version it
registered is in the registry; a run that registered nothing (rejected, failed) or whose
version was deleted keeps it for `settings.snapshot_days` days after the run started.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retrainer import constants as C
from retrainer.config.settings import Settings, get_settings
from retrainer.spec import ModelSpec
from retrainer.steps import provenance


@dataclass(frozen=True)
class SnapshotFate:
    uri: str  # the run's folder
    keep: bool
    why: str


def plan_retention(
    spec: ModelSpec, settings: Settings | None = None, now: datetime | None = None
) -> list[SnapshotFate]:
    """What the rule keeps and removes, for every snapshot a retrain run of `spec` recorded."""
    from mlflow.exceptions import MlflowException

    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    exp = client.get_experiment_by_name(spec.experiment_name)
    if exp is None:
        return []
    now = now or datetime.now(UTC)
    horizon = now - timedelta(days=settings.snapshot_days)
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{provenance.TAG_DATA_SNAPSHOT}` != ''",
        max_results=10_000,
    )
    from retrainer.stores import storage
    from retrainer.stores.registry import registered_by_run

    try:  # the versions registered from each run, whatever tags the runs hold
        registered: dict[str, list[int]] | None = registered_by_run(client, spec.name)
        unasked = ""
    except MlflowException as exc:  # MLflow down, no permission: never read as "deleted"
        registered, unasked = None, f"the registry could not be asked ({exc.error_code})"
    home = storage.join(settings.work_root, spec.name)
    fates = []
    for run in runs:
        folder = run.data.tags[provenance.TAG_DATA_SNAPSHOT].rsplit("/", 1)[0]
        parent, _, segment = folder.rstrip("/").rpartition("/")
        if parent != home or not segment or segment in (".", ".."):
            # a tag anyone who may edit the run can change: never a licence to delete elsewhere
            fates.append(SnapshotFate(folder, True, f"not a run folder under {home}: left alone"))
            continue
        if registered is None:
            fates.append(SnapshotFate(folder, True, unasked))
            continue
        versions = registered.get(run.info.run_id, [])
        if versions:
            names = ", ".join(f"v{v}" for v in versions)
            fates.append(
                SnapshotFate(
                    folder, True, f"{names} {'is' if len(versions) == 1 else 'are'} registered"
                )
            )
            continue
        version = run.data.tags.get(C.TAG_MODEL_VERSION)
        started = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
        what = f"v{version} was deleted" if version else "registered no version"
        if started > horizon:
            until = (started + timedelta(days=settings.snapshot_days)).date().isoformat()
            fates.append(SnapshotFate(folder, True, f"{what}; kept until {until}"))
        else:
            fates.append(
                SnapshotFate(folder, False, f"{what}; older than {settings.snapshot_days} days")
            )
    return fates


def prune(
    spec: ModelSpec,
    settings: Settings | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[SnapshotFate]:
    """Apply the rule: remove the folders it does not keep. Returns every fate."""
    from retrainer.stores import storage

    fates = plan_retention(spec, settings, now)
    if not dry_run:
        for fate in fates:
            if not fate.keep:
                storage.remove(fate.uri + "/" if storage.is_s3(fate.uri) else fate.uri)
    return fates


WINDOW_FILE = "window.parquet"  # what a monitor check snapshots of its window (work/<model>/<run>/)


def prune_windows(
    spec: ModelSpec,
    settings: Settings | None = None,
    now: datetime | None = None,
    current: str | None = None,
) -> list[str]:
    """Delete the monitor's window snapshots written more than `settings.snapshot_days` days ago
    (at least one: each check's rows, read by its own later tasks and by a retry; nothing needs
    them after), and return them. Only `work/<model>/<run>/window.parquet` files go (that exact
    file, and a local run folder it leaves empty), never `current` (the check's own window); a
    retrain run's snapshot next to them is never touched."""
    from pathlib import Path

    from retrainer.errors import DataError
    from retrainer.stores import storage

    settings = settings or get_settings()
    home = storage.join(settings.work_root, spec.name)
    days = max(settings.snapshot_days, 1)
    cutoff = ((now or datetime.now(UTC)) - timedelta(days=days)).timestamp()
    try:
        timed = storage.list_data_files_timed(home)
    except DataError:
        storage.exists(home)  # a store that cannot be listed raises here; an empty one is fine
        return []
    old = []
    for uri, written in timed:
        folder, _, name = uri.rpartition("/")
        parent, _, segment = folder.rpartition("/")
        in_run_folder = parent == home and segment not in ("", ".", "..")
        if name == WINDOW_FILE and in_run_folder and written < cutoff and uri != current:
            old.append(uri)
    for uri in old:
        storage.delete_file(uri)
        if not storage.is_s3(uri):
            folder_path = Path(uri).parent
            if folder_path.is_dir() and not any(folder_path.iterdir()):
                folder_path.rmdir()
    return old
