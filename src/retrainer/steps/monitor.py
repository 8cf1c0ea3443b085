"""The monitor steps: what the `<model>_monitor` DAG runs, testable without Airflow.

read_window → measure_drift (PSI vs the champion's reference profile, delayed labels, the
decision) → evidently_report, and retrain_allowed (dedup and cooldown) for the trigger.

Every check is one MLflow run in experiment `retrainer/<model>/monitor`: the window bounds and
the decision are tags, the PSI per feature and the drift share are metrics (timestamped at the
window's end, so the MLflow UI charts drift over time), the PSI table, the decision and the
Evidently report are artifacts. The next check's window starts where the last decided one
ended; a window with too few rows is not consumed, so its rows count towards the next check.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from retrainer import constants as C
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.errors import RetrainerError
from retrainer.spec import ModelSpec

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from retrainer.core.drift import DriftResult, ReferenceProfile

log = logging.getLogger(__name__)

OK, WARN, RETRAIN = "ok", "warn", "retrain"
INSUFFICIENT = "insufficient_data"
SCHEMA_CHANGED = "schema_changed"
NO_CHAMPION = "no_champion"
DECIDED = (OK, WARN, RETRAIN, SCHEMA_CHANGED)  # decisions that consume their window
META_COLUMNS = ("_request_id", "_row", "_ts", "_model_version", "_prediction", "_score")
EVIDENTLY_MAX_ROWS = 20_000

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MonitorError(RetrainerError):
    """The check cannot be made (no champion profile, unreadable log): permanent, no retries."""

    permanent = True


class NoChampion(MonitorError):
    """Nothing to compare with yet: the check is skipped, not failed."""


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '12h', '1d', '2w' or a number of seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"expected a duration like 30m, 12h, 1d or 2w; found {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def experiment_name(spec: ModelSpec) -> str:
    return f"{spec.experiment_name}/monitor"


# --- the decision ----------------------------------------------------------------------------


@dataclass
class LabelCheck:
    """The champion scored on labels that arrived for the window (delayed ground truth)."""

    rows: int
    metric: str
    value: float | None = None
    threshold: float | None = None
    below_threshold: bool = False
    note: str = ""


@dataclass
class MonitorDecision:
    decision: str
    reasons: list[str]
    features: list[str]  # the features responsible (drifted, or with a schema problem)
    psi: dict[str, float | None]
    max_psi: float | None
    drift_share: float
    rows: int
    psi_warn: float
    psi_retrain: float
    noise_floor: float | None
    window: dict[str, Any] = field(default_factory=dict)
    champion_version: str | None = None
    labels: dict[str, Any] | None = None
    problems: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        head = f"{self.decision}: " + "; ".join(self.reasons)
        top = sorted(((v, k) for k, v in self.psi.items() if v is not None), reverse=True)[:5]
        table = ", ".join(f"{k} {v:.3f}" for v, k in top)
        return f"{head}\nrows {self.rows}; top PSI: {table or 'n/a'}"


def decide(
    spec: ModelSpec,
    drift: DriftResult | None,
    rows: int,
    labels: LabelCheck | None = None,
    window: dict[str, Any] | None = None,
    champion_version: str | None = None,
) -> MonitorDecision:
    """ok / warn / retrain / insufficient_data / schema_changed, with the features responsible.

    Order: too few rows decides nothing; a schema change is an alert for people (retraining
    on broken inputs would not help); then a feature at or over psi_retrain, or the champion
    under its gate threshold on delayed labels, is a retrain; psi_warn a warning.
    """
    from retrainer.core.drift import noise_floor

    mon = spec.monitoring
    psi = {k: v for k, v in (drift.psi.items() if drift else [])}
    finite = {k: v for k, v in psi.items() if v is not None and math.isfinite(v)}
    max_psi = max(finite.values()) if finite else None
    warned = sorted((k for k, v in finite.items() if v >= mon.psi_warn), key=lambda k: -finite[k])
    drifted = [k for k in warned if finite[k] >= mon.psi_retrain]
    problems = drift.problems if drift else {}
    buckets = max((len(f.reference) for f in drift.features.values()), default=0) if drift else 0
    floor = noise_floor(buckets, rows, drift.rows_reference) if drift and buckets else None
    base = {
        "psi": {k: (v if v is not None and math.isfinite(v) else None) for k, v in psi.items()},
        "max_psi": max_psi,
        "drift_share": len(warned) / len(psi) if psi else 0.0,
        "rows": rows,
        "psi_warn": mon.psi_warn,
        "psi_retrain": mon.psi_retrain,
        "noise_floor": floor if floor is None or math.isfinite(floor) else None,
        "window": window or {},
        "champion_version": champion_version,
        "labels": asdict(labels) if labels else None,
        "problems": problems,
    }
    if rows < mon.min_rows:
        return MonitorDecision(
            INSUFFICIENT,
            [
                f"{rows} rows in the window, fewer than monitoring.min_rows ({mon.min_rows}); "
                "the rows stay in the next check's window"
            ],
            [],
            **base,  # type: ignore[arg-type]
        )
    if problems:
        return MonitorDecision(
            SCHEMA_CHANGED,
            [f"{k}: {v}" for k, v in problems.items()]
            + ["fix the producer of the traffic (or the spec); no retrain is triggered"],
            sorted(problems),
            **base,  # type: ignore[arg-type]
        )
    reasons = [f"PSI {k} {finite[k]:.3f} >= psi_retrain {mon.psi_retrain:g}" for k in drifted]
    if labels and labels.below_threshold:
        reasons.append(
            f"{labels.metric} {labels.value:.4f} on {labels.rows} labelled rows "
            f"breaks the gate threshold {labels.threshold:g}"
        )
    if reasons:
        return MonitorDecision(RETRAIN, reasons, drifted, **base)  # type: ignore[arg-type]
    if warned:
        return MonitorDecision(
            WARN,
            [f"PSI {k} {finite[k]:.3f} >= psi_warn {mon.psi_warn:g}" for k in warned],
            warned,
            **base,  # type: ignore[arg-type]
        )
    top = f"max PSI {max_psi:.3f}" if max_psi is not None else "no PSI"
    return MonitorDecision(OK, [f"{top} < psi_warn {mon.psi_warn:g}"], [], **base)  # type: ignore[arg-type]


# --- reading the logs ------------------------------------------------------------------------


def _days(start: datetime, end: datetime) -> list[str]:
    day = start.date()
    out = []
    while day <= end.date():
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


def read_log(root: str, model: str, start: datetime | None, end: datetime) -> pd.DataFrame:
    """Rows of a date-partitioned log with start <= _ts < end (columns may differ by file)."""
    import pandas as pd

    from retrainer.errors import DataError
    from retrainer.stores import storage

    base = storage.join(root, model)
    if start is None:
        try:
            files = storage.list_data_files(base)
        except DataError:
            files = []
    else:
        files = []
        for day in _days(start, end):
            try:
                files += storage.list_data_files(storage.join(base, f"date={day}"))
            except DataError:
                continue
    frames = []
    for f in files:
        try:
            frames.append(storage._parse(storage.read_bytes(f), f))
        except DataError as exc:  # a torn or corrupt part never stops the check
            log.warning("skipping unreadable log file %s: %s", f, exc)
    frames = [fr for fr in frames if len(fr)]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True, sort=False)
    ts = pd.to_datetime(df["_ts"], utc=True, errors="coerce", format="ISO8601")
    keep = ts < pd.Timestamp(end)
    if start is not None:
        keep &= ts >= pd.Timestamp(start)
    return df[keep.to_numpy()].reset_index(drop=True)


# --- MLflow plumbing -------------------------------------------------------------------------


def _experiment_id(client: MlflowClient, spec: ModelSpec, settings: Settings) -> str:
    from retrainer.steps.retrain import experiment_id

    location = settings.artifact_location(f"{spec.name}-monitor")
    return experiment_id(client, experiment_name(spec), location, {C.TAG_MODEL: spec.name})


def _checks(
    client: MlflowClient, spec: ModelSpec, settings: Settings, filter_string: str, n: int = 1
) -> list[Any]:
    exp = _experiment_id(client, spec, settings)
    return list(
        client.search_runs(
            [exp],
            filter_string=filter_string,
            max_results=n,
            order_by=["attributes.start_time DESC"],
        )
    )


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def window_start(
    client: MlflowClient, spec: ModelSpec, settings: Settings, exclude_run: str = ""
) -> datetime | None:
    """Where the last decided check's window ended (None: from the beginning of the log)."""
    for run in _checks(client, spec, settings, f"tags.`{C.TAG_WINDOW_CONSUMED}` = 'true'", 2):
        if run.info.run_id != exclude_run:
            return _parse_ts(run.data.tags.get(C.TAG_WINDOW_END))
    return None


# --- steps -----------------------------------------------------------------------------------


def read_window(
    spec: ModelSpec, ctx: RunContext, settings: Settings | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Pick the window (since the last decided check), snapshot its rows for the next steps.

    A retried task finds its MLflow run by the DAG run id and reuses the bounds it recorded.
    """
    from retrainer.steps.retrain import mlflow_client, run_key, run_tags
    from retrainer.stores import storage

    settings = settings or get_settings()
    client = mlflow_client(settings)
    run_id = _monitor_run(
        client, spec, ctx, settings, run_tags(spec, ctx) | {C.TAG_STAGE: "monitor"}
    )
    run = client.get_run(run_id)
    end = _parse_ts(run.data.tags.get(C.TAG_WINDOW_END))
    if end is None:
        end = now or datetime.now(UTC)
        start = window_start(client, spec, settings, exclude_run=run_id)
        client.set_tag(run_id, C.TAG_WINDOW_END, end.isoformat())
        client.set_tag(run_id, C.TAG_WINDOW_START, start.isoformat() if start else "")
    else:
        start = _parse_ts(run.data.tags.get(C.TAG_WINDOW_START))
    df = read_log(settings.inference_log_root, spec.name, start, end)
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
    log.info(
        "window %s .. %s: %d logged rows of %s",
        window["start"] or "(beginning)",
        window["end"],
        len(df),
        spec.name,
    )
    return {"mlflow_run_id": run_id, "window": window}


def _monitor_run(
    client: MlflowClient, spec: ModelSpec, ctx: RunContext, settings: Settings, tags: dict[str, str]
) -> str:
    from retrainer.steps.retrain import find_or_create_run

    exp = _experiment_id(client, spec, settings)
    return find_or_create_run(client, spec, ctx, settings, tags, experiment=exp)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding mixed types (a schema change in the traffic) as strings."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col].dropna().head(10_000)}
            if len(kinds) > 1:
                out[col] = out[col].map(lambda v: v if v is None or v != v else str(v))
    return out


def champion_reference(client: MlflowClient, spec: ModelSpec) -> tuple[str, str, ReferenceProfile]:
    """(version, run id, reference profile) of the champion; MonitorError if there is none."""
    from mlflow.exceptions import MlflowException

    from retrainer.core.drift import ReferenceProfile
    from retrainer.stores.registry import version_by_alias

    champion = version_by_alias(client, spec.name, C.ALIAS_CHAMPION)
    if champion is None:
        raise NoChampion(
            f"{spec.name}: no champion yet, so nothing to compare traffic with; run "
            f"{spec.retrain_dag_id} and {spec.deploy_dag_id} first"
        )
    run_id = str(champion.run_id)
    try:
        text = client.download_artifacts(run_id, C.ARTIFACT_REFERENCE_PROFILE)
        with open(text) as fh:
            profile = ReferenceProfile.from_dict(json.load(fh))
    except (MlflowException, OSError) as exc:
        raise MonitorError(
            f"{spec.name}: champion v{champion.version} (run {run_id}) has no reference profile "
            f"({C.ARTIFACT_REFERENCE_PROFILE}): it was trained before monitoring existed. Retrain "
            f"once ({spec.retrain_dag_id}) so the new champion carries one. ({type(exc).__name__})"
        ) from None
    return str(champion.version), run_id, profile


def label_check(
    spec: ModelSpec,
    settings: Settings,
    window_df: pd.DataFrame,
    start: datetime | None,
    model_uri: str,
    numeric: list[str],
    categorical: list[str],
) -> LabelCheck | None:
    """Score the champion on the window's rows whose labels arrived (None: not enough labels)."""
    import pandas as pd

    from retrainer.core.evaluation import compute_metrics
    from retrainer.spec import LOWER_IS_BETTER

    metric = spec.gate.primary_metric
    if window_df.empty or "_request_id" not in window_df:
        return None
    fb = read_log(
        settings.feedback_root, spec.name, start, datetime.now(UTC) + timedelta(minutes=1)
    )
    if fb.empty:
        return None
    fb = fb.drop_duplicates(["_request_id", "_row"], keep="last")
    rows = window_df.assign(_row=window_df["_row"].astype("int64"))
    joined = rows.merge(
        fb[["_request_id", "_row", "_label"]].assign(_row=fb["_row"].astype("int64")),
        on=["_request_id", "_row"],
        how="inner",
    )
    n = len(joined)
    if n < spec.monitoring.min_rows:
        return LabelCheck(
            rows=n, metric=metric, note=f"{n} labelled rows < min_rows {spec.monitoring.min_rows}"
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
        return LabelCheck(rows=n, metric=metric, note=f"cannot compute {metric}: {exc}"[:300])
    bound = spec.gate.thresholds.get(metric)
    threshold = None
    below = False
    if bound is not None and value is not None:
        if metric not in LOWER_IS_BETTER and bound.min is not None:
            threshold, below = bound.min, value < bound.min
        elif metric in LOWER_IS_BETTER and bound.max is not None:
            threshold, below = bound.max, value > bound.max
    return LabelCheck(
        rows=n, metric=metric, value=value, threshold=threshold, below_threshold=below
    )


def measure_drift(
    spec: ModelSpec, ctx: RunContext, read: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """PSI of the window vs the champion's reference profile, delayed labels, the decision."""
    import pandas as pd

    from retrainer.core.drift import compare_to_profile
    from retrainer.steps.retrain import mlflow_client
    from retrainer.stores import storage

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
            _parse_ts(window.get("start")),
            f"runs:/{champ_run}/{C.MODEL_ARTIFACT_NAME}",
            profile.numeric,
            profile.categorical,
        )
    decision = decide(spec, drift, len(df), labels, window, version)

    end_ms = int(datetime.fromisoformat(window["end"]).timestamp() * 1000)
    metrics = {"rows": float(len(df)), "drift_share": decision.drift_share}
    if decision.max_psi is not None:
        metrics["max_psi"] = decision.max_psi
    metrics |= {f"psi.{k}": v for k, v in decision.psi.items() if v is not None}
    if labels and labels.value is not None:
        metrics[f"labels.{labels.metric}"] = labels.value
    _log_metrics_at(client, run_id, metrics, end_ms)
    client.log_text(run_id, json.dumps(decision.to_dict(), indent=2), C.ARTIFACT_MONITOR_DECISION)
    if drift is not None:
        client.log_text(run_id, json.dumps(drift.to_dict(), indent=1), C.ARTIFACT_MONITOR_PSI)
    for key, value in {
        C.TAG_MONITOR_DECISION: decision.decision,
        C.TAG_MONITOR_FEATURES: ",".join(decision.features)[:5000],
        C.TAG_MONITOR_REASONS: " | ".join(decision.reasons)[:5000],
        C.TAG_CHAMPION_VERSION: version,
    }.items():
        client.set_tag(run_id, key, value)
    if decision.decision in DECIDED:  # the next check starts where this window ended
        client.set_tag(run_id, C.TAG_WINDOW_CONSUMED, "true")
    client.set_tag(run_id, C.TAG_STAGE, "measured")
    log.info("%s", decision.summary())
    publish(spec, decision.to_dict(), settings=settings)
    return {"mlflow_run_id": run_id, "window": window, "decision": decision.to_dict()}


def _log_metrics_at(
    client: MlflowClient, run_id: str, metrics: dict[str, float], ts_ms: int
) -> None:
    from mlflow.entities import Metric

    safe = {re.sub(r"[^A-Za-z0-9_\-. /]", "_", k): float(v) for k, v in metrics.items()}
    client.log_batch(run_id, metrics=[Metric(k, v, ts_ms, 0) for k, v in safe.items()])


def evidently_report(
    spec: ModelSpec, measured: dict[str, Any], settings: Settings | None = None
) -> str | None:
    """Evidently's DataDriftPreset (PSI) of the window vs the champion's reference sample, as HTML."""
    import tempfile

    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from retrainer.steps.retrain import mlflow_client
    from retrainer.stores import storage

    settings = settings or get_settings()
    client = mlflow_client(settings)
    window = measured["window"]
    if not window.get("uri"):
        log.info("empty window: no Evidently report")
        return None
    run_id = measured["mlflow_run_id"]
    _, champ_run, profile = champion_reference(client, spec)
    sample_path = client.download_artifacts(champ_run, C.ARTIFACT_REFERENCE_SAMPLE)
    reference = pd.read_parquet(sample_path)
    current = storage.read_table(window["uri"])
    problems = measured["decision"].get("problems") or {}
    numeric = [c for c in profile.numeric if c in current.columns and c not in problems]
    categorical = [c for c in profile.categorical if c in current.columns and c not in problems]
    if not numeric and not categorical:
        return None
    if len(current) > EVIDENTLY_MAX_ROWS:
        current = current.sample(EVIDENTLY_MAX_ROWS, random_state=0)
    from retrainer.core.training import prepare_features

    cur = prepare_features(current, numeric, categorical)
    ref = prepare_features(reference, numeric, categorical)
    cur = cur[[c for c in cur.columns if cur[c].notna().any()]]
    ref = ref[list(cur.columns)]
    definition = DataDefinition(
        numerical_columns=[c for c in numeric if c in cur.columns],
        categorical_columns=[c for c in categorical if c in cur.columns],
    )
    snapshot = Report([DataDriftPreset(method="psi")]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/drift_report.html"
        snapshot.save_html(path)
        client.log_artifact(run_id, path, "drift")
    client.set_tag(run_id, C.TAG_MONITOR_REPORT, C.ARTIFACT_MONITOR_REPORT)
    return C.ARTIFACT_MONITOR_REPORT


def retrain_allowed(
    spec: ModelSpec,
    settings: Settings | None = None,
    now: datetime | None = None,
    ignore_cooldown: bool = False,
) -> tuple[bool, str]:
    """False with the reason while an earlier drift-triggered retrain is inside the cooldown."""
    from retrainer.steps.retrain import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    cooldown = parse_duration(spec.monitoring.cooldown)
    last = _checks(client, spec, settings, f"tags.`{C.TAG_MONITOR_ACTION}` = 'triggered'")
    if not last:
        return True, "no earlier drift-triggered retrain"
    when = datetime.fromtimestamp(last[0].info.start_time / 1000, UTC)
    now = now or datetime.now(UTC)
    if now - when < cooldown:
        until = (when + cooldown).isoformat(timespec="seconds")
        retrain = last[0].data.tags.get(C.TAG_MONITOR_RETRAIN_RUN, "?")
        if ignore_cooldown:
            return True, f"cooldown until {until} ignored for this run (ignore_cooldown)"
        return False, (
            f"cooldown: {spec.retrain_dag_id} run {retrain} was triggered at "
            f"{when.isoformat(timespec='seconds')}; monitoring.cooldown {spec.monitoring.cooldown} "
            f"holds further drift retrains until {until}"
        )
    return True, f"last drift retrain at {when.isoformat(timespec='seconds')}, outside the cooldown"


def record_action(
    run_id: str,
    action: str,
    detail: str = "",
    retrain_run: str = "",
    settings: Settings | None = None,
) -> None:
    from retrainer.steps.retrain import mlflow_client

    client = mlflow_client(settings or get_settings())
    client.set_tag(run_id, C.TAG_MONITOR_ACTION, action)
    if detail:
        client.set_tag(run_id, C.TAG_MONITOR_ACTION_DETAIL, detail[:5000])
    if retrain_run:
        client.set_tag(run_id, C.TAG_MONITOR_RETRAIN_RUN, retrain_run)
    client.set_terminated(run_id, status="FINISHED")


def retrain_reason(decision: dict[str, Any]) -> str:
    window = decision.get("window") or {}
    return (
        f"monitor: {'; '.join(decision['reasons'])} "
        f"(window {window.get('start') or 'beginning'} .. {window.get('end')}, {decision['rows']} rows)"
    )


def check_for_run(
    spec: ModelSpec, dag_run_id: str, settings: Settings | None = None
) -> dict[str, Any] | None:
    """The decision a monitor DAG run recorded (None if it recorded none), and its MLflow run."""
    from retrainer.steps.retrain import mlflow_client

    settings = settings or get_settings()
    client = mlflow_client(settings)
    runs = _checks(client, spec, settings, f"tags.`{C.TAG_DAG_RUN_ID}` = '{dag_run_id}'")
    if not runs:
        return None
    run = runs[0]
    try:
        path = client.download_artifacts(run.info.run_id, C.ARTIFACT_MONITOR_DECISION)
        with open(path) as fh:
            decision: dict[str, Any] = json.load(fh)
    except Exception:  # measured nothing (no champion, unreadable log): tags say what happened
        decision = {}
    return {
        "decision": decision,
        "action": run.data.tags.get(C.TAG_MONITOR_ACTION, ""),
        "action_detail": run.data.tags.get(C.TAG_MONITOR_ACTION_DETAIL, ""),
        "retrain_run_id": run.data.tags.get(C.TAG_MONITOR_RETRAIN_RUN, ""),
        "mlflow_run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
    }


def publish(
    spec: ModelSpec,
    decision: dict[str, Any] | None = None,
    triggered: bool = False,
    settings: Settings | None = None,
) -> bool:
    """Report a check to the serving API's /metrics (best effort: never fails the check)."""
    import httpx

    settings = settings or get_settings()
    body: dict[str, Any] = {"triggered": triggered}
    if decision:
        body |= {"decision": decision["decision"], "psi": decision.get("psi") or {}}
    try:
        resp = httpx.post(
            f"{settings.serving_url}/models/{spec.name}/drift",
            json=body,
            headers={"authorization": f"Bearer {settings.serving_admin_token()}"},
            timeout=10,
        )
        resp.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        log.warning("could not report the check to serving at %s: %s", settings.serving_url, exc)
        return False
