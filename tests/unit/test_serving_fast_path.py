"""Serving's numpy fast path: used only where it gives exactly the pipeline's answers."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer.core.training import fit_pipeline, split_frame
from retrainer.serving.model import LoadedModel, probe_rows
from retrainer.serving.signature import Column
from retrainer.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def loaded(model, num, cat, classes=True):
    columns = [Column(c, "double", False) for c in num] + [Column(c, "string", False) for c in cat]
    labels = list(model.classes_) if classes else None
    return LoadedModel("m", "1", model, columns, num, cat, labels)


def rows_of(frame: pd.DataFrame) -> list[dict]:
    """Request rows as serving sees them after its checks: None for missing."""
    return [
        {k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
        for r in frame.to_dict(orient="records")
    ]


@pytest.mark.parametrize(
    "spec_file, data",
    [
        ("credit_default.yaml", "examples/credit/credit_data.csv"),
        ("diabetes_progression.yaml", "examples/diabetes/diabetes.csv"),
    ],
)
def test_the_fast_path_answers_exactly_as_the_pipeline(spec_file, data):
    spec = load_spec(ROOT / "models" / spec_file)
    frame = pd.read_csv(ROOT / data)
    if spec.data.features is None:  # inferred: every column but the target is a number here
        num, cat = [c for c in frame if c != spec.data.target], []
    else:
        num, cat = spec.data.features.numeric, spec.data.features.categorical
    train, test = split_frame(frame, spec)
    model = fit_pipeline(spec, train, num, cat)
    handle = loaded(model, num, cat, classes=spec.task == "classification")
    assert handle.compile(probe_rows(handle)) and handle.fast is not None

    # Real rows, then the same rows with holes and categories never seen in training.
    rows = rows_of(test[num + cat].head(300))
    rng = np.random.default_rng(0)
    odd = [dict(r) for r in rows]
    for r in odd:
        for c in rng.choice(num + cat, size=3, replace=False):
            r[str(c)] = None
        for c in cat:
            if rng.random() < 0.3:
                r[c] = "never-seen"
    for batch in (rows, odd, rows[:1], odd[:7]):
        assert handle._predict_fast(batch) == handle._predict_pipeline(batch)


def test_a_pipeline_of_another_layout_keeps_the_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.read_csv(ROOT / "examples/credit/credit_data.csv").head(800)
    # One-hot with a dropped category: not what the fast path builds, so it is not used.
    features = ColumnTransformer(
        [("categorical", OneHotEncoder(drop="first", handle_unknown="ignore"), ["Home"])]
    )
    model = Pipeline([("features", features), ("estimator", LogisticRegression(max_iter=300))]).fit(
        frame[["Home"]], frame["Status"]
    )
    handle = loaded(model, [], ["Home"])
    assert not handle.compile(probe_rows(handle)) and handle.fast is None
    assert handle.predict([{"Home": "rent"}])[0][0] in {"good", "bad"}


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_a_prediction_that_is_not_finite_is_refused():
    """A linear model's output overflows on inputs near float64's limit: answered as null it
    was logged as NaN and spoiled a shadow's mean difference for the rest of its step. It is
    refused (ValueError, which the batcher answers as the client's 422), after either path
    (LoadedModel.predict checks what _predict_fast or _predict_pipeline returned)."""
    spec = load_spec(ROOT / "models" / "diabetes_progression.yaml")
    linear = spec.model_copy(
        update={
            "model": spec.model.model_copy(
                update={"estimator": "sklearn.linear_model.LinearRegression", "params": {}}
            )
        }
    )
    frame = pd.read_csv(ROOT / "examples" / "diabetes" / "diabetes.csv")
    num = [c for c in frame if c != spec.data.target]
    train, _ = split_frame(frame, linear)
    handle = loaded(fit_pipeline(linear, train, num, []), num, [], classes=False)
    rows = rows_of(frame[num].head(3))
    fine, _ = handle.predict(rows)
    assert all(np.isfinite(fine))
    rows[1]["s1"] = 1.7e308
    with pytest.raises(ValueError, match=r"the prediction for row 1 is not finite \((-)?inf\)"):
        handle.predict(rows)
