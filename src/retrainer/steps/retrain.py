"""The retrain steps as plain functions: what each Airflow task runs, testable without Airflow.

Each step takes the spec, a RunContext and the small JSON result of the step before, and returns
small JSON for the next (XCom carries references, never data). One MLflow run per DAG run holds
everything the steps log; steps find it again by the DAG run id, so a retried task resumes it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from retrainer import constants as C
from retrainer.config.links import decision_links, model_version
from retrainer.config.settings import RunContext, Settings, get_settings
from retrainer.errors import DataError, DataValidationError, SpecError
from retrainer.spec import ModelSpec
from retrainer.steps import provenance
from retrainer.stores.tracking import (
    ensure_experiment,
    find_or_create_run,
    log_metrics,
    mlflow_client,
    run_key,
    run_tags,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


# --- steps -----------------------------------------------------------------------------------


def validate_data(
    spec: ModelSpec,
    ctx: RunContext,
    data_uri: str | None = None,
    reason: str = "",
    settings: Settings | None = None,
    trigger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the batch, run the expectation suite, snapshot what passed for the next steps.

    A batch that fails leaves a FAILED MLflow run with the report and raises
    DataValidationError (permanent): nothing downstream runs, the champion is untouched.
    """
    from retrainer.core.training import check_estimator
    from retrainer.core.validation import validate_frame
    from retrainer.stores import storage

    # The spec is a trust boundary: its estimator is checked (imported, never called) before
    # anything runs; a refused one is a SpecError, so the task fails for good, without retries.
    check_estimator(spec)
    settings = settings or get_settings()
    client = mlflow_client(settings)
    own = storage.resolve_source(spec.data.train, settings)
    if data_uri and spec.team and not storage.within(data_uri, own):
        # In multi-team mode the workers are shared: a team member who may trigger this retrain
        # must not make it read another team's files (README: Guarantees and trust boundaries)
        raise SpecError(
            f"data_path {data_uri[:200]!r} is outside {spec.name}'s data.train ({own}); in "
            "multi-team mode a retrain reads only its own model's data: land the batch there, "
            "or change data.train in the spec"
        )
    source = data_uri or own
    tags = run_tags(spec, ctx) | {C.TAG_DATA_SOURCE: source, C.TAG_STAGE: "validate_data"}
    if reason:
        tags[C.TAG_REASON] = reason[:5000]
    exp_id = ensure_experiment(client, spec, settings)
    run_id = find_or_create_run(client, spec, ctx, settings, tags, experiment=exp_id)
    client.update_run(run_id, status="RUNNING")
    client.log_text(run_id, spec_yaml(spec), C.ARTIFACT_SPEC)
    if trigger:  # why this run exists: the monitor's decision, PSI table and window
        client.log_text(run_id, json.dumps(trigger, indent=2, default=str), C.ARTIFACT_TRIGGER)
        client.set_tag(run_id, C.TAG_TRIGGER_ORIGIN, str(trigger.get("origin", "")))

    # A run's data is read once: a retry, or the run cleared and run again, validates and trains
    # on the snapshot it took (re-reading a grown folder overwrote the data a registered version
    # was trained on, and changed params MLflow then refused to log again, for good).
    taken = client.get_run(run_id).data.tags.get(provenance.TAG_DATA_SNAPSHOT)
    if taken and not storage.exists(taken):
        taken = None
    if taken:
        log.info(
            "this run already took its data (%s): validating that again, not %s (trigger a new "
            "run to read the source again)",
            taken,
            source,
        )
    try:
        df = storage.read_table(taken or source)
    except DataError as exc:
        client.set_tag(run_id, C.TAG_VALIDATION, "failed")
        client.log_text(run_id, str(exc), "validation/error.txt")
        client.set_terminated(run_id, status="FAILED")
        raise

    report = validate_frame(df, spec, source, expected_columns=champion_inputs(client, spec))
    client.log_text(run_id, json.dumps(report.to_dict(), indent=2), C.ARTIFACT_VALIDATION_JSON)
    client.log_text(
        run_id, report.to_html(f"{spec.name}: validation of {source}"), C.ARTIFACT_VALIDATION_HTML
    )
    failed = len(report.failures)
    log_metrics(client, run_id, {"validation_rows": report.row_count, "validation_failed": failed})
    client.set_tag(run_id, C.TAG_VALIDATION, "passed" if report.success else "failed")
    if not report.success:
        client.set_terminated(run_id, status="FAILED")
        raise DataValidationError(
            f"{spec.name}: data at {source} failed validation "
            f"({failed} of {len(report.results)} expectations)\n{report.summary()}",
            report,
        )

    digest = storage.table_digest(df)
    snapshot = taken or storage.join(settings.work_root, spec.name, run_key(ctx), "data.parquet")
    if not taken:
        storage.write_table(df, snapshot)
    client.set_tag(run_id, C.TAG_DATA_DIGEST, digest)
    # The exact rows trained on, by reference: the source folder may grow, this file does not.
    client.set_tag(run_id, provenance.TAG_DATA_SNAPSHOT, snapshot)
    client.set_tag(run_id, provenance.TAG_SNAPSHOT_RETENTION, retention_rule(settings))
    period = provenance.time_range(spec, df)
    if period:
        client.set_tag(run_id, provenance.TAG_TIME_RANGE, period)
    log_metrics(
        client,
        run_id,
        {"data.rows": len(df), "data.bytes": int(df.memory_usage(deep=True).sum())},
    )
    log.info(
        "validated %d rows from %s (digest %s): every expectation passed", len(df), source, digest
    )
    return {
        "mlflow_run_id": run_id,
        "experiment_id": exp_id,
        "source": source,
        "snapshot_uri": snapshot,
        "rows": int(len(df)),
        "data_digest": digest,
    }


def train_candidate(
    spec: ModelSpec, ctx: RunContext, validated: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Split deterministically, fit the spec's pipeline, log everything to the run."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    from retrainer.core.training import fit_pipeline, prepare_features, split_frame, trusted_types
    from retrainer.core.validation import feature_columns
    from retrainer.stores import storage

    settings = settings or get_settings()
    mlflow_client(settings)  # points mlflow at the tracking store
    run_id = validated["mlflow_run_id"]
    df = storage.read_table(validated["snapshot_uri"])
    numeric, categorical = feature_columns(spec, df)
    train, test = split_frame(df, spec)
    test_uri = storage.join(settings.work_root, spec.name, run_key(ctx), "test.parquet")
    storage.write_table(test, test_uri)

    started = time.perf_counter()
    model = fit_pipeline(spec, train, numeric, categorical, threads=settings.task_threads)
    fit_seconds = time.perf_counter() - started
    X_train = prepare_features(train, numeric, categorical)
    example = X_train.head(5)
    # From the whole training frame: columns with missing values become optional in the
    # signature, and the serving API allows nulls exactly there.
    signature = _nullable_where_allowed(spec, infer_signature(X_train, model.predict(example)))

    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({C.TAG_STAGE: "train_candidate", C.TAG_TASK_ID: ctx.task_id})
        mlflow.log_params(
            {
                "estimator": spec.model.estimator,
                **{f"model.{k}": v for k, v in spec.model.params.items()},
                "test_size": spec.data.test_size,
                "random_state": spec.data.random_state,
                "target": spec.data.target,
                "features.numeric": ",".join(numeric)[:6000],
                "features.categorical": ",".join(categorical)[:6000],
                "rows.train": len(train),
                "rows.test": len(test),
            }
        )
        # a tag, not a param: a retry may land on a worker with other cores, and MLflow refuses
        # to change a param (the retry failed for good)
        mlflow.set_tag("retrainer.threads", str(settings.task_threads))
        mlflow.log_metric("fit_seconds", fit_seconds)
        source = validated["source"]
        target = spec.data.target
        mlflow.log_input(
            from_pandas(train, source=source, targets=target, name=f"{spec.name}-train"),
            context="training",
        )
        mlflow.log_input(
            from_pandas(test, source=source, targets=target, name=f"{spec.name}-test"),
            context="test",
        )
        # Held-back rows for the deploy smoke test: the live endpoint must answer them exactly
        # as the registered model does.
        smoke = prepare_features(test.head(50), numeric, categorical)
        mlflow.log_text(smoke.to_json(orient="records"), C.ARTIFACT_SMOKE_ROWS)
        _log_reference(spec, X_train, numeric, categorical, model, test, train)
        mlflow.set_tags(
            {
                C.TAG_TEST_URI: test_uri,
                provenance.TAG_TEST_SNAPSHOT: test_uri,
                provenance.TAG_CODE_VERSION: provenance.code_version(),
                provenance.TAG_LOCK_DIGEST: provenance.lock_digest(),
                provenance.TAG_SEED: provenance.seeds(spec),
            }
        )
        info = mlflow.sklearn.log_model(
            model,
            name=C.MODEL_ARTIFACT_NAME,
            signature=signature,
            input_example=example,
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
            pip_requirements=_pip_requirements(),
            tags={C.TAG_DAG_RUN_ID: ctx.run_id},
        )
    log.info("trained %s on %d rows; model %s", spec.model.estimator, len(train), info.model_uri)
    return {
        "mlflow_run_id": run_id,
        "experiment_id": validated.get("experiment_id"),
        "source": validated["source"],
        "rows": validated.get("rows"),
        "model_uri": info.model_uri,
        "test_uri": test_uri,
        "numeric": numeric,
        "categorical": categorical,
        "data_digest": validated["data_digest"],
    }


def evaluate_candidate(
    spec: ModelSpec, ctx: RunContext, trained: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Score the candidate and the current champion on the same test split."""
    import mlflow.sklearn

    from retrainer.core.evaluation import compute_metrics, paired_comparison
    from retrainer.core.training import model_feature_columns
    from retrainer.stores import storage
    from retrainer.stores.registry import version_by_alias

    settings = settings or get_settings()
    client = mlflow_client(settings)
    run_id = trained["mlflow_run_id"]
    test = storage.read_table(trained["test_uri"])
    candidate = mlflow.sklearn.load_model(trained["model_uri"])
    cand = compute_metrics(spec, candidate, test, trained["numeric"], trained["categorical"])

    champ_metrics: dict[str, float] | None = None
    champ_version: str | None = None
    champ_error = ""
    paired: dict[str, Any] = {}
    champion = version_by_alias(client, spec.name, C.ALIAS_CHAMPION)
    if champion is not None:
        champ_version = str(champion.version)
        try:
            champ_model = mlflow.sklearn.load_model(f"models:/{spec.name}@{C.ALIAS_CHAMPION}")
            num, cat = model_feature_columns(champ_model)
            champ_metrics = compute_metrics(spec, champ_model, test, num, cat)
            paired = paired_comparison(
                spec,
                candidate,
                champ_model,
                test,
                (trained["numeric"], trained["categorical"]),
                (num, cat),
                seed=spec.data.random_state,
            )
        except Exception as exc:  # the gate turns this into a rejection with the reason
            champ_error = f"{type(exc).__name__}: {exc}"
            log.error(
                "champion v%s could not be scored on this test split: %s",
                champ_version,
                champ_error,
            )

    metrics = {f"test_{k}": v for k, v in cand.items()}
    if champ_metrics:
        metrics |= {f"champion_{k}": v for k, v in champ_metrics.items()}
    for m, r in (paired.get("comparison") or {}).get("metrics", {}).items():
        for key in ("lower", "p_value"):  # the paired test's bound and p-value, per metric
            if r.get(key) is not None:
                metrics[f"improvement_{key}_{m}"] = r[key]
    log_metrics(client, run_id, metrics)
    client.set_tag(run_id, C.TAG_STAGE, "evaluate_candidate")
    return {
        **trained,
        "candidate_metrics": cand,
        "champion_metrics": champ_metrics,
        "champion_version": champ_version,
        "champion_error": champ_error,
        "test_rows": int(len(test)),
        "comparison": paired.get("comparison"),
        "slices": paired.get("slices") or [],
    }


def gate_candidate(
    spec: ModelSpec, ctx: RunContext, evaluated: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Decide, and record the decision on the run: a rejection is an outcome, not an error."""
    from retrainer.core.gate import decide

    settings = settings or get_settings()
    client = mlflow_client(settings)
    decision = decide(
        spec,
        evaluated["candidate_metrics"],
        evaluated["champion_metrics"],
        evaluated["champion_version"],
        champion_error=evaluated.get("champion_error", ""),
        comparison=evaluated.get("comparison"),
        slices=evaluated.get("slices"),
    )
    run_id = evaluated["mlflow_run_id"]
    decision = replace(
        decision,
        links=decision_links(
            settings,
            ctx.dag_id,
            ctx.run_id,
            run_id,
            evaluated.get("experiment_id"),
            spec.name,
            evaluated["champion_version"],
        ),
    )
    client.log_text(run_id, json.dumps(decision.to_dict(), indent=2), C.ARTIFACT_GATE_JSON)
    client.set_tag(run_id, C.TAG_GATE_DECISION, decision.decision)
    client.set_tag(run_id, C.TAG_GATE_REASONS, " | ".join(decision.reasons)[:5000])
    client.set_tag(run_id, C.TAG_STAGE, "gate")
    if not decision.passed:
        client.set_terminated(run_id, status="FINISHED")
    from retrainer.stores.overview import SUMMARY_GATE, gate_summary, write_summary

    write_summary(
        client,
        spec.name,
        SUMMARY_GATE,
        gate_summary(decision.to_dict(), run_ref(ctx, run_id, evaluated.get("experiment_id"))),
    )
    log.info("%s", decision.summary())
    return {**evaluated, "gate": decision.to_dict()}


def register_candidate(
    spec: ModelSpec, ctx: RunContext, gated: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any] | None:
    """A new version with alias challenger (and champion if it is the first). None if rejected."""
    from retrainer.core.gate import GateDecision
    from retrainer.stores.registry import register_candidate as register

    decision = GateDecision.from_dict(gated["gate"])
    if not decision.passed:
        return None
    settings = settings or get_settings()
    client = mlflow_client(settings)
    run_id = gated["mlflow_run_id"]
    run_tags_ = client.get_run(run_id).data.tags
    tags = {
        C.TAG_DAG_ID: ctx.dag_id,
        C.TAG_DAG_RUN_ID: ctx.run_id,
        C.TAG_DATA_DIGEST: gated["data_digest"],
        C.TAG_GATE_DECISION: decision.decision,
        "mlflow_run_id": run_id,
        **{f"metric.{k}": f"{v:.6g}" for k, v in decision.candidate_metrics.items()},
        **{k: run_tags_[k] for k in provenance.PROVENANCE_TAGS if k in run_tags_},
    }
    reg = register(client, spec.name, gated["model_uri"], run_id, tags, spec.description)
    client.set_tag(run_id, C.TAG_MODEL_VERSION, reg.version)  # at once: the run says what it made
    # One paragraph for the MLflow UI (what changed, the gate, the data), kept as a version tag
    # so that the model card, which becomes the description below, always opens with it.
    client.set_model_version_tag(
        spec.name,
        reg.version,
        C.TAG_VERSION_SUMMARY,
        version_description(spec, ctx, gated, decision),
    )
    client.set_tag(run_id, C.TAG_STAGE, "registered")
    links = decision.links | {"candidate_version": model_version(settings, spec.name, reg.version)}
    client.log_text(
        run_id, json.dumps(replace(decision, links=links).to_dict(), indent=2), C.ARTIFACT_GATE_JSON
    )
    client.set_terminated(run_id, status="FINISHED")
    what = "registered" if reg.created else "already registered by this DAG run:"
    log.info("%s %s version %s (aliases: %s)", what, spec.name, reg.version, ", ".join(reg.aliases))
    _update_card(spec, reg.version, settings)
    return reg.to_dict() | {"mlflow_run_id": run_id, "experiment_id": gated.get("experiment_id")}


def run_ref(ctx: RunContext, run_id: str, experiment_id: str | None) -> dict[str, Any]:
    """Where a decision was made: the DAG run and the MLflow run (for summaries and links)."""
    return {
        "dag_id": ctx.dag_id,
        "dag_run_id": ctx.run_id,
        "mlflow_run_id": run_id,
        "experiment_id": experiment_id,
        "time": int(time.time() * 1000),
    }


def version_description(
    spec: ModelSpec, ctx: RunContext, gated: dict[str, Any], decision: Any
) -> str:
    """One paragraph for the MLflow UI: what changed, the gate result, the data."""
    metric = decision.primary_metric
    cand = decision.candidate_metrics.get(metric)
    champ = (decision.champion_metrics or {}).get(metric)
    if decision.champion_version and champ is not None:
        versus = (
            f"{metric} {cand:.4f} against champion v{decision.champion_version}'s {champ:.4f} "
            f"on the same {gated.get('test_rows', '?')} test rows (min_improvement "
            f"{decision.min_improvement:g})"
        )
    else:
        versus = f"{metric} {cand:.4f} on {gated.get('test_rows', '?')} test rows (no champion to compare with)"
    params = ", ".join(f"{k}={v}" for k, v in spec.model.params.items()) or "default parameters"
    rows = gated.get("rows")
    data = (
        f"{rows} validated rows of {gated.get('source', spec.data.train)}"
        if rows
        else str(gated.get("source", spec.data.train))
    )
    return (
        f"{spec.model.estimator} ({params}) trained by {ctx.dag_id} run {ctx.run_id} on {data} "
        f"(data digest {gated.get('data_digest', '?')}). Gate {decision.decision}: {versus}. "
        + " ".join(decision.reasons[:3])
    )[:5000]


def _update_card(spec: ModelSpec, version: str, settings: Settings) -> None:
    """The version's model card, written when it registers (and again on promotion or rollback)."""
    from retrainer.steps.card import publish_card

    try:
        publish_card(spec, version, settings)
    except Exception as exc:  # the card documents the version; it never blocks the registration
        log.warning("could not write the model card of %s v%s: %s", spec.name, version, exc)


def retention_rule(settings: Settings) -> str:
    return (
        "kept while the model version trained on it is registered; otherwise deleted "
        f"{settings.snapshot_days} days after the run (RETRAINER_SNAPSHOT_DAYS)"
    )


# --- helpers ---------------------------------------------------------------------------------


def champion_inputs(client: MlflowClient, spec: ModelSpec) -> list[str]:
    """The columns the current champion takes, when the spec lets features be inferred.

    A batch must still have every one of them: losing one is a spec change (list the features
    without it), not something to discover when the champion cannot be scored at the gate.
    With listed features, or no champion yet, there is nothing to add.
    """
    feats = spec.data.features
    if feats is not None and (feats.numeric or feats.categorical):
        return []
    from mlflow.models import get_model_info

    from retrainer.stores.registry import version_by_alias

    champion = version_by_alias(client, spec.name, C.ALIAS_CHAMPION)
    if champion is None:
        return []
    signature = get_model_info(f"models:/{spec.name}/{champion.version}").signature
    return [] if signature is None else [str(n) for n in signature.inputs.input_names()]


def spec_yaml(spec: ModelSpec) -> str:
    import yaml

    return str(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))


def _nullable_where_allowed(spec: ModelSpec, signature: Any) -> Any:
    """Inputs may be null wherever the spec's validation allows nulls (the pipeline imputes).

    Inferred from the training split alone, a column whose one missing value happened to land
    in the test split would become required, and serving would reject whole requests for it.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    def allowed(name: str) -> bool:
        check = spec.validation.columns.get(name)
        if check is not None and check.max_null_fraction is not None:
            return check.max_null_fraction > 0
        return spec.validation.max_null_fraction > 0

    inputs = Schema(
        [
            ColSpec(c.type, c.name, required=c.required and not allowed(str(c.name)))
            for c in signature.inputs.inputs
        ]
    )
    return ModelSignature(inputs=inputs, outputs=signature.outputs, params=signature.params)


def _log_reference(
    spec: ModelSpec,
    X_train: Any,
    numeric: list[str],
    categorical: list[str],
    model: Any = None,
    test: Any = None,
    train: Any = None,
) -> None:
    """What the monitor compares traffic with: the profile (with the model's feature importance,
    its calibration and its primary metric on the test split), and a sample for Evidently."""
    import tempfile

    import mlflow

    from retrainer.core.drift import build_profile

    profile = build_profile(X_train, numeric, categorical, spec.monitoring.psi_bins)
    if model is not None and test is not None and len(test):
        from retrainer.core.evaluation import reference_extras

        try:
            extras = reference_extras(spec, model, test, numeric, categorical, train)
        except ValueError as exc:  # e.g. one class only in a tiny test split: no estimate later
            log.warning("no importance/calibration for the reference profile: %s", exc)
        else:
            profile.importance = extras["importance"]
            profile.calibration = extras["calibration"]
            profile.reference_metric = extras["reference_metric"]
    mlflow.log_text(profile.to_json(), C.ARTIFACT_REFERENCE_PROFILE)
    n = min(len(X_train), C.REFERENCE_SAMPLE_ROWS)
    sample = X_train.sample(n, random_state=spec.data.random_state) if n < len(X_train) else X_train
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/{C.ARTIFACT_REFERENCE_SAMPLE.rsplit('/', 1)[-1]}"
        sample.to_parquet(path, index=False)
        mlflow.log_artifact(path, C.ARTIFACT_REFERENCE_SAMPLE.rsplit("/", 1)[0])


def _pip_requirements() -> list[str]:
    """Explicit requirements: inferring them costs ~6 s per model and adds nothing here."""
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}"
        for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")
    ]
