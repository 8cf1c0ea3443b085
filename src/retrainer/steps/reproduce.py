"""Rebuild a registered version outside the registry and compare its predictions.

From what the version recorded at training time: the spec snapshot (artifact of its run), the
data snapshot (by URI, checked against the digest), the seeds and the thread count; the code
version and the lock digest are compared with the running ones. The rebuilt model predicts the
version's held-back rows (its test split), and so does the registered model: identical means a
largest difference of at most 1e-9 (probabilities or values) and the same labels. Otherwise the
report says what differs and the likely why (data gone or changed, code or lock changed).
Nothing is logged to MLflow and nothing is registered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrainer import constants as C
from retrainer.config.settings import Settings, get_settings
from retrainer.errors import ReproduceError
from retrainer.steps import provenance

log = logging.getLogger(__name__)
TOLERANCE = 1e-9
IDENTICAL, DIFFERS, IMPOSSIBLE = "identical", "differs", "impossible"


@dataclass
class Reproduction:
    model: str
    version: str
    status: str = IMPOSSIBLE  # identical | differs | impossible
    rows: int = 0
    max_difference: float | None = None
    labels_differ: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)  # why it differs or could not be rebuilt
    checks: dict[str, dict[str, str]] = field(default_factory=dict)  # recorded vs now

    @property
    def identical(self) -> bool:
        return self.status == IDENTICAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        head = f"{self.model} v{self.version}: {self.status.upper()}"
        if self.rows:
            diff = "-" if self.max_difference is None else f"{self.max_difference:.3g}"
            head += (
                f" on {self.rows} held-back rows (max difference {diff}, "
                f"{self.labels_differ} labels differ; tolerance {TOLERANCE:g}), "
                f"rebuilt in {self.seconds:.1f} s"
            )
        out = [head]
        for name, check in self.checks.items():
            same = "same" if check["recorded"] == check["now"] else "DIFFERENT"
            out.append(f"  {name:<13} {same:<9} recorded {check['recorded']}")
            if same != "same":
                out.append(f"  {'':<13} {'':<9} now      {check['now']}")
        out += [f"  - {r}" for r in self.reasons]
        return out


def reproduce(ref: str, settings: Settings | None = None) -> Reproduction:
    """Rebuild `ref` (MODEL, MODEL@alias or MODEL/version) and compare predictions."""
    import yaml

    from retrainer.spec import parse_spec
    from retrainer.steps.card import resolve_version
    from retrainer.stores import storage
    from retrainer.stores.tracking import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    name, version = resolve_version(client, ref)
    result = Reproduction(name, version)
    mv = client.get_model_version(name, version)
    if not mv.run_id:
        result.reasons.append("the version has no MLflow run: nothing recorded to rebuild from")
        return result
    run = client.get_run(mv.run_id)
    tags = {**run.data.tags, **(mv.tags or {})}
    # threads: a param of runs from before it became a tag
    params = {"threads": run.data.tags.get("retrainer.threads", "1")} | run.data.params

    try:
        spec_text = Path(client.download_artifacts(mv.run_id, C.ARTIFACT_SPEC)).read_text()
        spec = parse_spec(yaml.safe_load(spec_text), f"spec snapshot of {name} v{version}")
    except Exception as exc:
        result.reasons.append(f"spec snapshot {C.ARTIFACT_SPEC} unreadable: {exc}")
        return result

    recorded_digest = tags.get(C.TAG_DATA_DIGEST, "not recorded")
    result.checks = {
        "code version": {
            "recorded": tags.get(provenance.TAG_CODE_VERSION, "not recorded"),
            "now": provenance.code_version(),
        },
        "lock digest": {
            "recorded": tags.get(provenance.TAG_LOCK_DIGEST, "not recorded"),
            "now": provenance.lock_digest(),
        },
        "seeds": {
            "recorded": tags.get(provenance.TAG_SEED, "not recorded"),
            "now": provenance.seeds(spec),
        },
    }
    snapshot = tags.get(provenance.TAG_DATA_SNAPSHOT)
    if not snapshot:
        result.reasons.append(
            "data gone: the version records no data snapshot (trained before snapshots were "
            f"recorded); its data digest was {recorded_digest}"
        )
        return result
    if not storage.exists(snapshot):
        retention = tags.get(provenance.TAG_SNAPSHOT_RETENTION, "no retention rule recorded")
        result.reasons.append(
            f"data gone: the data snapshot {snapshot} (digest {recorded_digest}) no longer "
            f"exists (retention: {retention}); the version cannot be rebuilt from its own data"
        )
        result.checks["data digest"] = {"recorded": recorded_digest, "now": "(snapshot deleted)"}
        return result
    df = storage.read_table(snapshot)
    digest = storage.table_digest(df)
    result.checks["data digest"] = {"recorded": recorded_digest, "now": digest}

    started = time.perf_counter()
    try:
        model, rebuilt, rows = _rebuild(spec, df, name, version, params)
    except ReproduceError as exc:
        result.reasons.append(str(exc))
        return result
    result.seconds = time.perf_counter() - started
    result.rows = len(rows)
    if spec.task == "classification":
        a, b = model.predict_proba(rows), rebuilt.predict_proba(rows)
        result.labels_differ = int(
            sum(
                str(x) != str(y)
                for x, y in zip(model.predict(rows), rebuilt.predict(rows), strict=True)
            )
        )
    else:
        a, b = model.predict(rows), rebuilt.predict(rows)
    import numpy as np

    result.max_difference = float(np.abs(np.asarray(a, float) - np.asarray(b, float)).max())
    changed = [k for k, c in result.checks.items() if c["recorded"] != c["now"]]
    same_data = "data digest" not in changed  # the same predictions from other rows prove little
    if result.max_difference <= TOLERANCE and result.labels_differ == 0 and same_data:
        result.status = IDENTICAL
        return result
    result.status = DIFFERS
    why = {
        "data digest": "data changed: the snapshot's rows differ from those recorded",
        "code version": "code changed since training (another commit or uncommitted edits)",
        "lock digest": "dependencies changed: requirements.lock differs from training time",
        "seeds": "seeds differ: the spec snapshot's seeds are not those recorded",
    }
    result.reasons += [why[k] for k in changed]
    if not changed:
        result.reasons.append(
            "same data, code, lock and seeds, yet predictions differ: the estimator is not "
            "deterministic here (threads, hardware, or unseeded randomness)"
        )
    return result


def _rebuild(
    spec: Any, df: Any, name: str, version: str, params: dict[str, str]
) -> tuple[Any, Any, Any]:
    """(registered model, rebuilt model, held-back rows as model input)."""
    import mlflow.sklearn

    from retrainer.core.training import fit_pipeline, prepare_features, split_frame
    from retrainer.core.validation import feature_columns

    numeric, categorical = feature_columns(spec, df)
    train, test = split_frame(df, spec)
    for key, n in (("rows.train", len(train)), ("rows.test", len(test))):
        if key in params and int(params[key]) != n:
            raise ReproduceError(
                f"{name} v{version}: the data snapshot splits into {n} {key[5:]} rows, the "
                f"version recorded {params[key]}: the snapshot is not the data it trained on"
            )
    threads = int(params.get("threads", 1) or 1)
    rebuilt = fit_pipeline(spec, train, numeric, categorical, threads=threads)
    registered = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    return registered, rebuilt, prepare_features(test, numeric, categorical)
