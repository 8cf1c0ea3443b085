from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer.core.evaluation import compute_metrics, positive_label
from retrainer.core.training import fit_pipeline, prepare_features, split_frame, trusted_types
from retrainer.errors import SpecError
from retrainer.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CREDIT = ROOT / "examples" / "credit" / "credit_data.csv"


@pytest.fixture(scope="module")
def credit():
    return pd.read_csv(CREDIT)


@pytest.fixture(scope="module")
def spec():
    return load_spec(ROOT / "models" / "credit_default.yaml")


def features(spec):
    return spec.data.features.numeric, spec.data.features.categorical


def test_split_is_deterministic_and_stratified(credit, spec):
    a_train, a_test = split_frame(credit, spec)
    b_train, b_test = split_frame(credit, spec)
    assert a_test.index.equals(b_test.index)
    assert len(a_test) == pytest.approx(len(credit) * 0.2, rel=0.08)
    share = (a_test["Status"] == "bad").mean()
    assert share == pytest.approx((credit["Status"] == "bad").mean(), abs=0.03)


def test_split_is_stable_as_the_table_grows(credit, spec):
    """Rows keep their side when batches are added, shuffled, or re-typed: the champion's
    training rows never reach a later test split."""
    old, new = credit.iloc[:3000], credit.iloc[3000:]
    old_train, old_test = split_frame(old, spec)
    grown = pd.concat([new, old.sample(frac=1.0, random_state=3)])
    grown["Seniority"] = grown["Seniority"].astype("float64")  # int in one file, float in another
    grown_train, grown_test = split_frame(grown[list(reversed(grown.columns))], spec)
    assert set(old_test.index) <= set(grown_test.index)
    assert set(old_train.index) <= set(grown_train.index)
    assert not set(grown_test.index) & set(old_train.index)


def test_fit_and_metrics_on_real_data(credit, spec):
    num, cat = features(spec)
    train, test = split_frame(credit, spec)
    model = fit_pipeline(spec, train, num, cat)
    metrics = compute_metrics(spec, model, test, num, cat)
    assert set(metrics) == {"accuracy", "log_loss", "roc_auc", "f1", "precision", "recall"}
    assert 0.75 < metrics["roc_auc"] < 1.0
    # Missing values and unseen categories at predict time don't break the pipeline.
    odd = test.head(3).copy()
    odd["Income"] = np.nan
    odd["Home"] = "castle"
    assert len(model.predict_proba(prepare_features(odd, num, cat))) == 3


def test_trusted_types_are_listed_for_hist_gradient_boosting(credit, spec):
    num, cat = features(spec)
    model = fit_pipeline(spec, credit.head(600), num, cat)
    listed = trusted_types(model)
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in listed
    assert all(t.startswith(("sklearn.", "numpy.", "scipy.")) for t in listed)


def test_regression_metrics():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=400), "c": rng.choice(["a", "b"], 400)})
    df["y"] = 3 * df["x"] + (df["c"] == "a") + rng.normal(scale=0.1, size=400)
    spec = parse_spec(
        {
            "name": "r",
            "task": "regression",
            "data": {"train": "x.csv", "target": "y"},
            "model": {"estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 0.1}},
            "gate": {"primary_metric": "rmse"},
        }
    )
    train, test = split_frame(df, spec)
    model = fit_pipeline(spec, train, ["x"], ["c"])
    m = compute_metrics(spec, model, test, ["x"], ["c"])
    assert m["r2"] > 0.95 and m["rmse"] < 0.3 and set(m) == {"rmse", "mae", "r2"}


def test_bad_estimator_and_params_are_spec_errors(spec):
    bad = spec.model_copy(
        update={"model": spec.model.model_copy(update={"estimator": "sklearn.nope.Model"})}
    )
    with pytest.raises(SpecError, match="model.estimator: cannot import 'sklearn.nope.Model'"):
        fit_pipeline(bad, pd.DataFrame({"Status": ["a"]}), [], [])
    bad = spec.model_copy(
        update={"model": spec.model.model_copy(update={"params": {"max_itr": 3}})}
    )
    with pytest.raises(SpecError, match="model.params"):
        fit_pipeline(bad, pd.DataFrame({"Status": ["a"]}), [], [])


def test_positive_label_matches_type(spec):
    assert positive_label(spec, ["bad", "good"]) == "bad"
    with pytest.raises(ValueError, match="not one of the target's classes"):
        positive_label(spec, ["yes", "no"])
