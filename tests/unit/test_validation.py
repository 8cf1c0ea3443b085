"""The expectation suite built from the spec, run with the real Great Expectations."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer.core.validation import build_expectations, feature_columns, validate_frame
from retrainer.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def credit():
    return pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")


@pytest.fixture(scope="module")
def spec():
    return load_spec(ROOT / "models" / "credit_default.yaml")


def only_failure(report):
    assert not report.success
    assert len(report.failures) == 1, [
        (f.column, f.expectation, f.observed) for f in report.failures
    ]
    return report.failures[0]


def test_good_data_passes(credit, spec):
    report = validate_frame(credit, spec)
    assert report.success and report.row_count == len(credit)
    assert not report.failures
    kinds = {r.expectation for r in report.results}
    assert kinds == {
        "expect_table_row_count_to_be_between",
        "expect_column_to_exist",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_unique_value_count_to_be_between",
        "expect_column_distinct_values_to_contain_set",
    }


def test_missing_column(credit, spec):
    f = only_failure(validate_frame(credit.drop(columns="Job"), spec))
    assert (f.column, f.expectation, f.observed) == (
        "Job",
        "expect_column_to_exist",
        "column is missing",
    )


def test_wrong_type(credit, spec):
    bad = credit.astype({"Income": object})
    bad.loc[:4, "Income"] = "abc"
    f = only_failure(validate_frame(bad, spec))
    assert f.column == "Income" and f.expectation == "expect_column_values_to_be_in_type_list"
    assert f.observed.startswith("type object; expected a numeric type") and "abc" in f.observed


def test_too_many_nulls(credit, spec):
    bad = credit.copy()
    bad.loc[: len(bad) // 2, "Assets"] = np.nan
    f = only_failure(validate_frame(bad, spec))
    assert f.column == "Assets" and f.expectation == "expect_column_values_to_not_be_null"
    assert f.observed.startswith("50.") and "null" in f.observed
    assert f.spec_key == "validation.max_null_fraction"


def test_out_of_range(credit, spec):
    bad = credit.copy()
    bad.loc[:11, "Age"] = 140
    f = only_failure(validate_frame(bad, spec))
    assert f.column == "Age" and f.expectation == "expect_column_values_to_be_between"
    assert "max 140" in f.observed and "12 rows out of range" in f.observed
    assert f.spec_key == "validation.columns.Age.min/max"


def test_unknown_category(credit, spec):
    bad = credit.copy()
    bad.loc[:7, "Home"] = "castle"
    f = only_failure(validate_frame(bad, spec))
    assert f.column == "Home" and f.observed == "unexpected values: ['castle'] (8 rows)"


def test_too_few_rows_and_empty_file(credit, spec):
    f = only_failure(validate_frame(credit.head(100), spec))
    assert f.expectation == "expect_table_row_count_to_be_between" and f.observed == "100 rows"
    empty = validate_frame(credit.head(0), spec)
    assert not empty.success and empty.failures[0].observed == "0 rows"


def test_target_nulls_and_column_override(credit):
    raw = load_spec(ROOT / "models" / "credit_default.yaml").model_dump()
    raw["validation"]["columns"]["Income"] = {"max_null_fraction": 0.01}
    strict = parse_spec(raw)
    bad = credit.copy()
    bad.loc[:3, "Status"] = np.nan
    report = validate_frame(bad, strict)
    failed = {(f.column, f.expectation) for f in report.failures}
    assert ("Status", "expect_column_values_to_not_be_null") in failed  # the target: no nulls
    assert ("Income", "expect_column_values_to_not_be_null") in failed  # 8.6% > the 1% override
    income = next(f for f in report.failures if f.column == "Income")
    assert income.spec_key == "validation.columns.Income.max_null_fraction"


def test_report_outputs(credit, spec):
    bad = credit.copy()
    bad.loc[:7, "Home"] = "castle"
    report = validate_frame(bad, spec, source="landing/batch.csv")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["failed"] == 1 and data["success"] is False
    page = report.to_html("credit_default: landing/batch.csv")
    assert "FAILED: 1 of" in page and "castle" in page and "<table>" in page
    text = report.summary()
    assert (
        "fix the batch at landing/batch.csv" in text and "validation.columns.Home.allowed" in text
    )


def test_default_features_by_dtype():
    spec = parse_spec(
        {
            "name": "m",
            "task": "regression",
            "data": {"train": "x.csv", "target": "y", "ignore": ["id"]},
            "model": {"estimator": "sklearn.linear_model.Ridge"},
            "gate": {"primary_metric": "rmse"},
        }
    )
    df = pd.DataFrame({"id": [1], "a": [1.0], "b": ["x"], "flag": [True], "y": [2.0]})
    assert feature_columns(spec, df) == (["a"], ["b", "flag"])
    planned = build_expectations(spec, df)
    assert {e["column"] for e in planned} == {None, "a", "b", "flag", "y"}
