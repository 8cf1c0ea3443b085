"""What a version needs to be rebuilt: code version, lock digest, seeds and the data snapshot.

Recorded on the retrain's MLflow run (tags) and copied to the model version when it registers;
`retrainer reproduce` reads them back and the model card states them.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import cache
from typing import Any

from retrainer.config.settings import PROJECT_ROOT
from retrainer.spec import ModelSpec

TAG_CODE_VERSION = "retrainer.code_version"
TAG_LOCK_DIGEST = "retrainer.lock_digest"
TAG_SEED = "retrainer.seed"
TAG_DATA_SNAPSHOT = "retrainer.data_snapshot"
TAG_TEST_SNAPSHOT = "retrainer.test_snapshot"
TAG_SNAPSHOT_RETENTION = "retrainer.snapshot_retention"
TAG_TIME_RANGE = "retrainer.data_time_range"
LOCK_FILE = PROJECT_ROOT / "requirements.lock"
PROVENANCE_TAGS = (
    TAG_CODE_VERSION,
    TAG_LOCK_DIGEST,
    TAG_SEED,
    TAG_DATA_SNAPSHOT,
    TAG_TEST_SNAPSHOT,
    TAG_SNAPSHOT_RETENTION,
    TAG_TIME_RANGE,
)


@cache
def code_version() -> str:
    """`git:<commit>` (with `+dirty` when src/ has uncommitted changes) of the checkout this
    package runs from, else `retrainer==<version>` of the installed package."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"git:{commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"retrainer=={version('retrainer')}"


@cache
def lock_digest() -> str:
    """sha256 of requirements.lock (the exact dependency set), or `none` if it is not there."""
    try:
        return "sha256:" + hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    except OSError:
        return "none"


def seeds(spec: ModelSpec) -> str:
    """The seeds that make a fit repeatable: the split's, and the estimator's if it takes one."""
    estimator = spec.model.params.get("random_state")
    return f"split={spec.data.random_state},estimator={estimator}"


def time_range(spec: ModelSpec, df: Any) -> str | None:
    """`first .. last` of the spec's card.time_column in the data, if it names one there."""
    column = spec.card.time_column
    if not column or column not in df.columns:
        return None
    values = df[column].dropna()
    if values.empty:
        return None
    return f"{values.min()} .. {values.max()} ({column})"
