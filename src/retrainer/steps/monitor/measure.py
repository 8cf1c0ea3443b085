"""PSI of the window vs the champion's reference profile, delayed labels, and the decision."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from retrainer import constants as C
from retrainer.config.links import decision_links
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.errors import NoChampion
from retrainer.spec import ModelSpec
from retrainer.steps.monitor.checks import champion_reference, find_checks, parse_ts
from retrainer.steps.monitor.decision import DECIDED, NO_CHAMPION, LabelCheck, decide
from retrainer.steps.monitor.report import publish
from retrainer.steps.monitor.window import (
    LATE_DAYS,
    META_COLUMNS,
    champion_rows,
    last_labels,
    log_files,
    log_frames,
    read_days,
    read_files,
    row_keys,
    row_pairs,
    sample_frames,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

log = logging.getLogger(__name__)
LABEL_DAYS = 90  # how long after its answer a label is still matched with its row (retention)


def label_check(
    spec: ModelSpec,
    settings: Settings,
    window_df: pd.DataFrame,
    start: datetime | None,
    end: datetime,
    model_uri: str,
    numeric: list[str],
    categorical: list[str],
) -> LabelCheck | None:
    """Score the champion on the window's rows whose labels arrived (None: not enough labels)."""
    import pandas as pd

    from retrainer.core.evaluation import compute_metrics
    from retrainer.spec import LOWER_IS_BETTER

    metric = spec.gate.primary_metric
    if window_df.empty or not {"_request_id", "_row"} <= set(window_df.columns):
        return None
    # A labelled row counts once, in the window where the later of it and its label arrives:
    # the window's own rows with any label of the last LATE_DAYS (one may have come before its
    # row reached the log), and earlier windows' rows whose label arrived now (a label often
    # comes days after its answer), found through the answer time the label carries.
    # The labels that arrived in the window: at most monitoring.max_rows of them, sampled by row
    # so that a row keeps all its labels (a correction replaces what it corrects).
    fresh, given = _fresh_labels(settings, spec, start, end)
    sampled = given > len(fresh)
    # a sample by row: a row past its cut is left out with all its labels, earlier ones too (or
    # the label a correction replaced would be scored)
    cut = float(row_keys(fresh).max()) if sampled else 1.0
    earlier = _earlier_labels(settings, spec, start, window_df, fresh, cut)
    if fresh.empty and earlier.empty:
        return None
    fb = last_labels(pd.concat([earlier, fresh], ignore_index=True, sort=False))
    rows = pd.concat(
        [window_df, _answered_before(settings, spec, fresh, window_df, end)], ignore_index=True
    )
    rows = rows.assign(_row=rows["_row"].astype("int64")).drop_duplicates(["_request_id", "_row"])
    joined = rows.merge(
        fb[["_request_id", "_row", "_label"]],  # rows already integers (`_labels_of`)
        on=["_request_id", "_row"],
        how="inner",
    )
    n = len(joined)
    said = (
        f"{len(fresh)} of the {given} labels that arrived in the window, a random sample by row "
        "(monitoring.max_rows); "
        if sampled
        else ""
    )
    if n < spec.monitoring.min_rows:
        return LabelCheck(
            rows=n,
            metric=metric,
            note=f"{said}{n} labelled rows < min_rows {spec.monitoring.min_rows}",
        )
    import mlflow.sklearn

    model = mlflow.sklearn.load_model(model_uri)
    frame = joined.rename(columns={"_label": spec.data.target})
    if spec.task == "regression":
        frame[spec.data.target] = pd.to_numeric(frame[spec.data.target], errors="coerce")
    frame = frame.dropna(subset=[spec.data.target])
    try:
        value = compute_metrics(spec, model, frame, numeric, categorical).get(metric)
    except ValueError as exc:  # e.g. one class only among the labels
        note = f"{said}cannot compute {metric}: {exc}"
        return LabelCheck(rows=n, metric=metric, note=note[:400])
    bound = spec.gate.thresholds.get(metric)
    threshold = None
    below = False
    if bound is not None and value is not None:
        if metric not in LOWER_IS_BETTER and bound.min is not None:
            threshold, below = bound.min, value < bound.min
        elif metric in LOWER_IS_BETTER and bound.max is not None:
            threshold, below = bound.max, value > bound.max
    return LabelCheck(
        rows=n,
        metric=metric,
        value=value,
        threshold=threshold,
        below_threshold=below,
        note=said.rstrip("; "),
    )


def _fresh_labels(
    settings: Settings, spec: ModelSpec, start: datetime | None, end: datetime
) -> tuple[pd.DataFrame, int]:
    """The labels that arrived in the window, at most monitoring.max_rows of them sampled by row
    (`row_keys`), read one file at a time; and how many arrived."""
    files = log_files(settings.feedback_root, spec.name, start, end, arrived=True)
    labelled = (_labels_of(uri, f) for uri, f in log_frames(files))
    frames = ((f, row_keys(f)) for f in labelled if len(f))
    return sample_frames(frames, spec.monitoring.max_rows)


def _earlier_labels(
    settings: Settings,
    spec: ModelSpec,
    start: datetime | None,
    window_df: pd.DataFrame,
    fresh: pd.DataFrame,
    cut: float = 1.0,
) -> pd.DataFrame:
    """Labels of the LATE_DAYS before the window, for its own rows (a label can reach the log
    before its row) and for the rows labelled again in it (the last label wins): only those
    rows' labels are kept, as each file is read, and of those only rows whose `row_keys` are at
    most `cut` (the fresh labels' sample)."""
    import pandas as pd

    if start is None:
        return pd.DataFrame()
    files = log_files(
        settings.feedback_root,
        spec.name,
        start - timedelta(days=LATE_DAYS),
        start,
        arrived=True,
    )
    wanted = row_pairs(window_df)
    if len(fresh):
        wanted = wanted.append(row_pairs(fresh))

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        frame = _labels_of("a feedback file", frame)
        if frame.empty:
            return frame
        mine = row_pairs(frame).isin(wanted) & (row_keys(frame) <= cut)
        return frame[mine]

    return read_files(files, keep)


def _labels_of(uri: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A feedback file's labels as the check reads them: request ids as text, rows as integers;
    a file without those columns, or rows whose `_row` is not a whole number, are skipped with a
    warning (written by hand: /feedback checks both), never a check that fails for good."""
    import numpy as np
    import pandas as pd

    if not {"_request_id", "_row", "_label", "_ts"} <= set(frame.columns):
        if len(frame):
            log.warning("skipping %s: no _request_id, _row, _label and _ts columns", uri)
        return frame.iloc[0:0]
    row = pd.to_numeric(frame["_row"], errors="coerce")
    whole = (row.notna() & np.isfinite(row) & (row == row.round())).to_numpy()
    if not whole.all():
        log.warning(
            "skipping %d labels in %s whose _row is not a whole number", (~whole).sum(), uri
        )
    return frame[whole].assign(
        _request_id=frame["_request_id"][whole].astype(str), _row=row[whole].astype("int64")
    )


def _answered_before(
    settings: Settings,
    spec: ModelSpec,
    labels: pd.DataFrame,
    window_df: pd.DataFrame,
    end: datetime,
) -> pd.DataFrame:
    """The champion's logged rows that `labels` label and `window_df` lacks (rows of earlier
    windows, or of this one left out of its sample): from the day partitions their answer times
    name (and the next day: a row answered just before midnight may be logged after it), up to
    LABEL_DAYS back, each read once and cut to those rows as it is read; a file that reached the
    log after the window's end is the next window's. Labels from request ids that carry no time
    match only the window's own rows."""
    import pandas as pd

    if labels.empty or "_answered" not in labels.columns:
        return window_df.iloc[0:0]
    # by (request, row): a request's other rows may be another window's, or left out of a sample
    wanted = labels[~row_pairs(labels).isin(row_pairs(window_df))]
    answered = pd.to_datetime(wanted["_answered"], utc=True, errors="coerce", format="ISO8601")
    want = row_pairs(wanted[answered.notna().to_numpy()])
    oldest = (end - timedelta(days=LABEL_DAYS)).date()
    days = {d + timedelta(days=k) for d in {t.date() for t in answered.dropna()} for k in (0, 1)}
    found = read_days(
        settings.inference_log_root,
        spec.name,
        {d for d in days if oldest <= d <= end.date()},
        lambda frame: (
            frame[row_pairs(frame).isin(want)]
            if {"_request_id", "_row"} <= set(frame.columns)
            else frame.iloc[0:0]
        ),
        before=end,
    )
    return champion_rows(found) if len(found) else window_df.iloc[0:0]


def measure_drift(
    spec: ModelSpec, ctx: RunContext, read: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """PSI of the window vs the champion's reference profile, delayed labels, the decision."""
    import pandas as pd

    from retrainer.core.drift import compare_to_profile
    from retrainer.stores import storage
    from retrainer.stores.tracking import log_metrics, mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    run_id = read["mlflow_run_id"]
    window = read["window"]
    try:
        version, champ_run, profile = champion_reference(client, spec)
    except NoChampion:  # the check ends here; its window is not consumed
        client.set_tag(run_id, C.TAG_MONITOR_DECISION, NO_CHAMPION)
        client.set_terminated(run_id, status="FINISHED")
        raise
    df = storage.read_table(window["uri"]) if window.get("uri") else pd.DataFrame()
    features = df.drop(columns=[c for c in META_COLUMNS if c in df.columns])
    drift = compare_to_profile(profile, features) if len(df) else None
    labels = None
    if len(df) >= spec.monitoring.min_rows:
        labels = label_check(
            spec,
            settings,
            df,
            parse_ts(window.get("start")),
            parse_ts(window["end"]) or datetime.now(UTC),
            f"runs:/{champ_run}/{C.MODEL_ARTIFACT_NAME}",
            profile.numeric,
            profile.categorical,
        )
    previous = _previous_drifted(client, spec, settings, run_id)
    estimate = label_free_estimate(spec, profile, df, lambda: _reference_sample(client, champ_run))
    weighted = None
    if drift is not None and profile.importance:
        from retrainer.core.significance import weighted_drift

        w = weighted_drift(drift.psi, profile.importance)
        weighted = w if w == w else None  # NaN: no importance above 0
    decision = decide(spec, drift, len(df), labels, window, version, previous, estimate, weighted)
    decision.links = decision_links(
        settings, ctx.dag_id, ctx.run_id, run_id, read.get("experiment_id"), spec.name, version
    )

    end_ms = int(datetime.fromisoformat(window["end"]).timestamp() * 1000)
    metrics = {"rows": float(len(df)), "drift_share": decision.drift_share}
    if decision.max_psi is not None:
        metrics["max_psi"] = decision.max_psi
    metrics |= {f"psi.{k}": v for k, v in decision.psi.items() if v is not None}
    if labels and labels.value is not None:
        metrics[f"labels.{labels.metric}"] = labels.value
    if estimate is not None:
        metrics[f"estimated.{estimate['metric']}"] = estimate["estimated"]
    if weighted is not None:
        metrics["weighted_psi"] = weighted
    log_metrics(client, run_id, metrics, end_ms)
    client.log_text(run_id, json.dumps(decision.to_dict(), indent=2), C.ARTIFACT_MONITOR_DECISION)
    if drift is not None:
        client.log_text(run_id, json.dumps(drift.to_dict(), indent=1), C.ARTIFACT_MONITOR_PSI)
    for key, value in {
        C.TAG_MONITOR_DECISION: decision.decision,
        C.TAG_MONITOR_FEATURES: ",".join(decision.features)[:5000],
        C.TAG_MONITOR_REASONS: " | ".join(decision.reasons)[:5000],
        C.TAG_MONITOR_DRIFTED: ",".join(decision.drifted)[:5000],
        C.TAG_CHAMPION_VERSION: version,
    }.items():
        client.set_tag(run_id, key, value)
    if decision.decision in DECIDED:  # the next check starts where this window ended
        client.set_tag(run_id, C.TAG_WINDOW_CONSUMED, "true")
    client.set_tag(run_id, C.TAG_STAGE, "measured")
    from retrainer.steps.alerts import monitor_state
    from retrainer.stores.overview import (
        SUMMARY_MONITOR,
        monitor_summary,
        read_summary,
        write_summary,
    )

    before = read_summary(client, spec.name, SUMMARY_MONITOR) or {}
    if before.get("mlflow_run_id") == run_id:  # a retried task: the state before this check
        previous = before.get("previous_state")
    else:
        previous = before.get("state")
    state = monitor_state(decision.decision, previous)
    ref = {
        "dag_id": ctx.dag_id,
        "dag_run_id": ctx.run_id,
        "mlflow_run_id": run_id,
        "experiment_id": read.get("experiment_id"),
        "time": end_ms,
        "state": state,
        "previous_state": previous,
    }
    write_summary(client, spec.name, SUMMARY_MONITOR, monitor_summary(decision.to_dict(), ref))
    log.info("%s", decision.summary())
    publish(spec, decision.to_dict(), settings=settings)
    return {
        "mlflow_run_id": run_id,
        "experiment_id": read.get("experiment_id"),
        "window": window,
        "decision": decision.to_dict(),
        "state": state,
        "previous_state": previous,
    }


def _previous_drifted(
    client: Any, spec: ModelSpec, settings: Settings, run_id: str
) -> list[list[str]] | None:
    """Drifted features of the last decided checks, oldest first (for monitoring.consecutive)."""
    k = spec.monitoring.consecutive
    if k <= 1:
        return None
    runs = find_checks(client, spec, settings, f"tags.`{C.TAG_WINDOW_CONSUMED}` = 'true'", k)
    runs = [r for r in runs if r.info.run_id != run_id][: k - 1]
    drifted = [r.data.tags.get(C.TAG_MONITOR_DRIFTED, "") for r in reversed(runs)]
    return [[f for f in d.split(",") if f] for d in drifted]


def _reference_sample(client: Any, champ_run: str) -> pd.DataFrame | None:
    """The champion's sample of its training rows (None for a champion logged without one)."""
    import pandas as pd

    try:
        return pd.read_parquet(client.download_artifacts(champ_run, C.ARTIFACT_REFERENCE_SAMPLE))
    except Exception as exc:  # noqa: BLE001 - an older or partial champion run: no support check
        log.warning("no reference sample for the estimate's support check: %s", exc)
        return None


def label_free_estimate(
    spec: ModelSpec,
    profile: Any,
    df: pd.DataFrame,
    reference: Callable[[], pd.DataFrame | None] | None = None,
) -> dict[str, Any] | None:
    """The champion's primary metric on the window without labels (CBPE), from the scores the
    serving API logged and the calibration stored with the profile; None where it cannot be
    made (regression, multiclass, an older profile, too few scored rows). With ``reference``
    (loads the champion's sample of its training rows), also whether the window lies within
    their support (core.cbpe.support): outside it the estimate is not trusted."""
    import numpy as np
    import pandas as pd

    from retrainer.core.cbpe import Calibration, estimate, estimated_drop, support
    from retrainer.spec import LOWER_IS_BETTER

    ref, cal = profile.reference_metric, profile.calibration
    if not ref or not cal or df.empty or not {"_score", "_prediction"} <= set(df.columns):
        return None
    score = pd.to_numeric(df["_score"], errors="coerce").to_numpy(dtype=float)
    ok = ~np.isnan(score)
    if int(ok.sum()) < spec.monitoring.min_rows:
        return None
    predicted_positive = (df["_prediction"].astype(str) == ref["positive"]).to_numpy()[ok]
    # _score is the probability of the predicted label: the positive class's, or 1 minus it
    p_pos = np.where(predicted_positive, score[ok], 1.0 - score[ok])
    metric = ref["metric"]
    value = estimate(Calibration.from_dict(cal).apply(p_pos), predicted_positive, p_pos, [metric])[
        metric
    ]
    out = estimated_drop(
        metric,
        float(ref["value"]),
        float(value),
        int(ok.sum()),
        limit=spec.monitoring.max_estimated_drop,
        lower_is_better=metric in LOWER_IS_BETTER,
    ).to_dict()
    sample = reference() if reference is not None else None
    if sample is not None and len(sample) > 1:
        from retrainer.core.training import prepare_features

        # features left out of the trigger (a day counter) leave the support by construction
        keep = [c for c in df.columns if c in sample.columns and c not in spec.monitoring.exclude]
        numeric = [c for c in profile.numeric if c in keep]
        categorical = [c for c in profile.categorical if c in keep]
        try:
            out["support"] = support(
                prepare_features(sample, numeric, categorical),
                prepare_features(df[ok], numeric, categorical),
                numeric,
                categorical,
                spec.monitoring.max_outside_support,
            ).to_dict()
        except ValueError as exc:
            log.warning("no support check for the estimate: %s", exc)
    return out
