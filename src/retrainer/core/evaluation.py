"""Metrics on the test split, the same way for the candidate and the champion."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from retrainer.spec import ModelSpec


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
