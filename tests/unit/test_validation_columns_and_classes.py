"""Every column a batch needs must exist, and a classification target must be learnable:
both refused by validate_data with the column and what was found, via GX expectations."""

from pathlib import Path

import pandas as pd
import pytest

from retrainer.core.validation import validate_frame
from retrainer.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def credit():
    return pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")


@pytest.fixture(scope="module")
def listed():
    return load_spec(ROOT / "models" / "credit_default.yaml")


@pytest.fixture(scope="module")
def inferred(listed):
    """The credit spec with its features inferred from each batch."""
    raw = listed.model_dump()
    raw["data"]["features"] = None
    return parse_spec(raw)


def failures(report):
    return [(f.column, f.expectation, f.spec_key, f.observed) for f in report.failures]


def test_inferred_features_column_named_by_validation_must_exist(credit, inferred):
    report = validate_frame(credit.drop(columns="Age"), inferred)
    assert failures(report) == [
        ("Age", "expect_column_to_exist", "validation.columns.Age", "column is missing")
    ]
    assert "Age: column is present; observed column is missing" in report.summary()
    assert "expect_column_to_exist" in report.to_html("t") and "FAILED" in report.to_html("t")


def test_inferred_features_champion_input_must_exist(credit, inferred):
    batch = credit.drop(columns="Seniority")  # not named by validation, but the champion took it
    assert validate_frame(batch, inferred).success  # without the champion's inputs: unnoticed
    report = validate_frame(batch, inferred, expected_columns=list(credit.columns.drop("Status")))
    [(column, expectation, key, observed)] = failures(report)
    assert (column, expectation, observed) == (
        "Seniority",
        "expect_column_to_exist",
        "column is missing",
    )
    assert "champion's inputs" in key and "list data.features without it" in key


def test_listed_feature_must_exist_even_if_validation_says_optional(credit, listed):
    raw = listed.model_dump()
    raw["validation"]["columns"]["Debt"] = {"required": False}
    report = validate_frame(credit.drop(columns="Debt"), parse_spec(raw))
    assert failures(report) == [
        ("Debt", "expect_column_to_exist", "data.features (Debt)", "column is missing")
    ]


def test_optional_validation_column_may_be_absent(credit, inferred):
    raw = inferred.model_dump()
    raw["validation"]["columns"]["Notes"] = {"required": False, "max_null_fraction": 1.0}
    assert validate_frame(credit, parse_spec(raw)).success


def test_target_with_one_class_is_refused_naming_the_classes(credit, listed):
    raw = listed.model_dump()
    raw["data"]["positive_class"] = None
    report = validate_frame(credit[credit.Status == "good"], parse_spec(raw))
    assert failures(report) == [
        (
            "Status",
            "expect_column_unique_value_count_to_be_between",
            "data.target",
            "1 class(es) in 'Status': ['good']; expected at least 2",
        )
    ]


def test_binary_target_without_its_positive_class_is_refused(credit, listed):
    batch = credit.copy()
    batch["Status"] = batch["Status"].map({"good": "repaid", "bad": "defaulted"})
    raw = listed.model_dump()
    raw["validation"]["columns"]["Status"]["allowed"] = None
    report = validate_frame(batch, parse_spec(raw))
    assert failures(report) == [
        (
            "Status",
            "expect_column_distinct_values_to_contain_set",
            "data.positive_class",
            "2 class(es) in 'Status': ['defaulted', 'repaid']; 'bad' is not among them",
        )
    ]


def test_positive_class_matches_across_int_and_text(credit, listed):
    batch = credit.copy()
    batch["Status"] = (batch["Status"] == "bad").astype(int)
    raw = listed.model_dump()
    raw["data"]["positive_class"] = "1"
    raw["validation"]["columns"]["Status"]["allowed"] = None
    report = validate_frame(batch, parse_spec(raw))
    assert report.success, failures(report)
    observed = {f.expectation: f.observed for f in report.results if f.column == "Status"}
    assert (
        observed["expect_column_distinct_values_to_contain_set"]
        == "2 class(es) in 'Status': ['0', '1']"
    )


def test_a_stray_third_label_in_a_binary_target_is_refused(credit, listed):
    """One mistyped label ("Bad" beside "bad") made a three-class model whose roc_auc was NaN,
    and the gate passed it: with a positive class the target must have exactly two."""
    batch = credit.copy()
    batch.loc[5, "Status"] = "Bad"
    raw = listed.model_dump()
    raw["validation"]["columns"]["Status"]["allowed"] = None
    report = validate_frame(batch, parse_spec(raw))
    assert failures(report) == [
        (
            "Status",
            "expect_column_unique_value_count_to_be_between",
            "data.target",
            "3 class(es) in 'Status': ['Bad', 'bad', 'good']; expected exactly 2 "
            "(data.positive_class: a binary classifier): correct the stray labels, or leave "
            "positive_class out for a multi-class model",
        )
    ]


def test_a_label_only_in_the_test_split_is_a_clear_data_error(credit, listed):
    from retrainer.core.evaluation import compute_metrics
    from retrainer.core.training import fit_pipeline, split_frame
    from retrainer.errors import DataError

    train, test = split_frame(credit, listed)
    num, cat = listed.data.features.numeric, listed.data.features.categorical
    model = fit_pipeline(listed, train.head(800), num, cat)
    test = test.copy()
    test.loc[test.index[:3], "Status"] = "Bad"
    with pytest.raises(DataError, match=r"the test split holds 3 row\(s\) whose Status the model"):
        compute_metrics(listed, model, test, num, cat)
