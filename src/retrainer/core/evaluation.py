"""Metrics on the test split, the same way for the candidate and the champion."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from retrainer.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.core.cbpe import Calibration
    from retrainer.spec import ModelSpec

log = logging.getLogger(__name__)


def positive_label(spec: ModelSpec, classes: list[Any]) -> Any:
    """The positive class: the spec's, matched to the model's label type, else sklearn's default."""
    wanted = spec.data.positive_class
    if wanted is None:
        return classes[-1]
    for c in classes:
        if c == wanted or str(c) == str(wanted):
            return c
    raise ValueError(
        f"data.positive_class: {wanted!r} is not one of the target's classes {classes}; "
        "fix the spec or the data"
    )


def compute_metrics(
    spec: ModelSpec, model: Any, test: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> dict[str, float]:
    """Every metric of the spec's task for one model on one test frame."""
    import numpy as np
    from sklearn import metrics as m

    from retrainer.core.training import prepare_features

    X = prepare_features(test, numeric, categorical)
    y = test[spec.data.target]
    if spec.task == "regression":
        pred = np.asarray(model.predict(X), dtype=float)
        return {
            "rmse": float(math.sqrt(m.mean_squared_error(y, pred))),
            "mae": float(m.mean_absolute_error(y, pred)),
            "r2": float(m.r2_score(y, pred)),
        }

    classes = list(model.classes_)
    unknown = y.dropna()[~y.dropna().isin(classes)]
    if len(unknown):
        raise DataError(
            f"the test split holds {len(unknown)} row(s) whose {spec.data.target} the model was "
            f"never trained on: {sorted({str(v)[:40] for v in unknown})[:10]}; a class needs at "
            "least 2 rows to be on both sides of the split: correct those labels or add rows"
        )
    pred = model.predict(X)
    proba = model.predict_proba(X)
    out = {"accuracy": float(m.accuracy_score(y, pred))}
    out["log_loss"] = float(m.log_loss(y, proba, labels=classes))
    if len(classes) == 2:
        pos = positive_label(spec, classes)
        col = classes.index(pos)
        y_pos = (y.astype(str) == str(pos)).to_numpy()
        out["roc_auc"] = float(m.roc_auc_score(y_pos, proba[:, col]))
        kw: dict[str, Any] = {"pos_label": pos, "zero_division": 0}
    else:
        out["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        kw = {"average": "macro", "zero_division": 0}
    out["f1"] = float(m.f1_score(y, pred, **kw))
    out["precision"] = float(m.precision_score(y, pred, **kw))
    out["recall"] = float(m.recall_score(y, pred, **kw))
    return out


def _scored(spec: ModelSpec, model: Any, X: pd.DataFrame, classes: list[Any]) -> Any:
    """A model's predictions on the test rows, classes in the candidate's order."""
    import numpy as np

    from retrainer.core.comparison import Scored, encode_labels

    if spec.task == "regression":
        return Scored(np.asarray(model.predict(X), dtype=float))
    own = [str(c) for c in model.classes_]
    order = [own.index(str(c)) for c in classes]  # KeyError-like ValueError if a class is missing
    proba = np.asarray(model.predict_proba(X), dtype=float)[:, order]
    return Scored(encode_labels(model.predict(X), classes), proba)


def paired_comparison(
    spec: ModelSpec,
    candidate: Any,
    champion: Any,
    test: pd.DataFrame,
    candidate_columns: tuple[list[str], list[str]],
    champion_columns: tuple[list[str], list[str]],
    seed: int = 0,
) -> dict[str, Any]:
    """Candidate vs champion on the same test rows: every metric's paired test and interval,
    and the per-slice harm tests of the spec's slices (small JSON for the gate)."""
    from retrainer.core.comparison import compare, compare_slices, encode_labels, slice_labels
    from retrainer.core.training import prepare_features

    gate = spec.gate
    task = spec.task
    metrics = list(spec.metrics())
    X_c = prepare_features(test, *candidate_columns)
    X_h = prepare_features(test, *champion_columns)
    y_raw = test[spec.data.target]
    positive = None
    if task == "regression":
        import numpy as np

        y = np.asarray(y_raw, dtype=float)
        classes: list[Any] = []
    else:
        classes = list(candidate.classes_)
        y = encode_labels(y_raw.tolist(), classes)
        if len(classes) == 2:
            positive = classes.index(positive_label(spec, classes))
    cand = _scored(spec, candidate, X_c, classes)
    champ = _scored(spec, champion, X_h, classes)
    rule = "non_inferiority" if gate.rule == "point" else gate.rule
    result = compare(
        task,
        metrics,
        y,
        cand,
        champ,
        positive=positive,
        comparison=rule,  # type: ignore[arg-type]
        margin=gate.effective_margin if gate.rule != "point" else 0.0,
        confidence=gate.confidence,
        resamples=gate.resamples,
        seed=seed,
        rule_margins=gate.rule_margins,
    )
    slices = []
    for sl in gate.slices:
        if sl.column not in test.columns:
            slices.append(
                {
                    "column": sl.column,
                    "metric": gate.primary_metric,
                    "blocked": False,
                    "slices": [],
                    "note": f"column {sl.column!r} is not in the test split",
                }
            )
            continue
        report = compare_slices(
            task,
            gate.primary_metric,
            y,
            cand,
            champ,
            slice_labels(test[sl.column].tolist(), sl.bins),
            column=sl.column,
            positive=positive,
            slice_margin=gate.slice_margin,
            confidence=gate.confidence,
            min_rows=gate.slice_min_rows,
            resamples=gate.resamples,
            seed=seed,
        )
        slices.append(report.to_dict())
    return {"comparison": result.to_dict(), "slices": slices}


_SCORERS = {
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "log_loss": "neg_log_loss",
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
}


CALIBRATION_FOLDS = 5


def out_of_fold_percentiles(
    spec: ModelSpec,
    train: pd.DataFrame,
    test: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    pos: Any,
    seed: int | None = None,
) -> np.ndarray:
    """Each training row's positive-class probability from the spec's pipeline fitted on the
    other folds (stratified, seeded by ``seed`` or data.random_state), as its mid-rank
    percentile among that fold's model's scores on the test split (core.cbpe.anchored): five
    models score on five scales, and the champion on a sixth."""
    from sklearn.model_selection import StratifiedKFold

    from retrainer.core.cbpe import anchor_of, anchored
    from retrainer.core.training import build_pipeline, prepare_features

    y = train[spec.data.target]
    X = prepare_features(train, numeric, categorical)
    X_test = prepare_features(test, numeric, categorical)
    state = spec.data.random_state if seed is None else seed
    folds = StratifiedKFold(CALIBRATION_FOLDS, shuffle=True, random_state=state)
    out = np.empty(len(train), dtype=np.float64)
    for fit_rows, held in folds.split(X, y):
        model = build_pipeline(spec, numeric, categorical).fit(X.iloc[fit_rows], y.iloc[fit_rows])
        col = list(model.classes_).index(pos)
        anchor = anchor_of(model.predict_proba(X_test)[:, col])
        out[held] = anchored(model.predict_proba(X.iloc[held])[:, col], anchor)
    return out


def cross_fitted_calibration(
    spec: ModelSpec,
    train: pd.DataFrame,
    test: pd.DataFrame,
    test_score: np.ndarray,
    numeric: list[str],
    categorical: list[str],
    pos: Any,
    seed: int | None = None,
) -> Calibration:
    """The champion's calibration on the test split plus every training row out of fold, all on
    the anchored scale (core.cbpe.Calibration.anchor: the champion's test-split scores)."""
    from retrainer.core.cbpe import anchor_of, anchored, fit_calibration

    target = spec.data.target
    positive = np.concatenate(
        [
            (train[target].astype(str) == str(pos)).to_numpy(),
            (test[target].astype(str) == str(pos)).to_numpy(),
        ]
    )
    anchor = anchor_of(test_score)
    oof = out_of_fold_percentiles(spec, train, test, numeric, categorical, pos, seed)
    return fit_calibration(
        positive,
        np.concatenate([oof, anchored(test_score, anchor)]),
        method="isotonic, cross-fitted on test-split percentiles",
        anchor=anchor,
    )


def reference_extras(
    spec: ModelSpec,
    model: Any,
    test: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    train: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """At training time, on the test split: permutation importance of each feature (how much
    the champion relies on it: the monitor weights drift by it), and for binary classifiers the
    isotonic calibration and the primary metric the label-free estimate is compared with.

    With ``monitoring.calibration: cross_fitted`` (default) and the training rows given, the
    calibration is fitted on the test split plus out-of-fold predictions on the training rows
    (five times the rows), each on the anchored scale (``cross_fitted_calibration``): pooling the
    fold models' raw scores with the champion's flattened the map, and the estimate erred 1.2-3.1
    points low without any shift; anchored, it errs -1.0 to +0.1 points on unshifted traffic
    (README: Decisions with confidence). Where the folds cannot be made (a class with fewer rows
    than folds), on the test split alone."""
    from sklearn.inspection import permutation_importance

    from retrainer.core.cbpe import ESTIMABLE, fit_calibration
    from retrainer.core.training import prepare_features

    X = prepare_features(test, numeric, categorical)
    y = test[spec.data.target]
    metric = spec.gate.primary_metric
    default = "accuracy" if spec.task == "classification" else "r2"
    scorer = _SCORERS.get(metric, default)
    classes = list(getattr(model, "classes_", []))
    if scorer == "roc_auc" and len(classes) != 2:
        scorer = "roc_auc_ovr"
    result = permutation_importance(
        model, X, y, scoring=scorer, n_repeats=3, random_state=spec.data.random_state
    )
    importance = {
        c: float(max(v, 0.0)) for c, v in zip(X.columns, result.importances_mean, strict=True)
    }
    out: dict[str, Any] = {"importance": importance, "calibration": None, "reference_metric": None}
    if spec.task == "classification" and len(classes) == 2 and metric in ESTIMABLE:
        pos = positive_label(spec, classes)
        score = model.predict_proba(X)[:, classes.index(pos)]
        positive = (y.astype(str) == str(pos)).to_numpy()
        calibration = None
        if spec.monitoring.calibration == "cross_fitted" and train is not None and len(train):
            try:
                calibration = cross_fitted_calibration(
                    spec, train, test, score, numeric, categorical, pos
                )
            except ValueError as exc:
                log.warning("calibration on the test split only (no out-of-fold scores: %s)", exc)
        if calibration is None:
            calibration = fit_calibration(positive, score)
        out["calibration"] = calibration.to_dict()
        out["reference_metric"] = {
            "metric": metric,
            "value": compute_metrics(spec, model, test, numeric, categorical)[metric],
            "positive": str(pos),
        }
    return out
