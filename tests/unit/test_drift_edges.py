"""`retrainer drift` on tables a person hands over: a schema change is named and exits 3,
nonsense bins and empty tables are refused with a message, never a traceback or a verdict."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.core.drift import compare_tables
from retrainer.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
CREDIT = ROOT / "examples" / "credit" / "credit_data.csv"
runner = CliRunner()


@pytest.fixture(scope="module")
def credit():
    return pd.read_csv(CREDIT)


@pytest.fixture
def files(tmp_path, credit, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(ROOT / "models" / "credit_default.yaml", models)
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(models))
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))

    def write(name: str, frame: pd.DataFrame) -> str:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return str(path)

    return write


def drift(*args: str):
    return runner.invoke(app, ["drift", *args])


def test_column_missing_from_current_is_a_named_schema_change_exit_3(files, credit):
    ref = files("ref.csv", credit)
    cur = files("cur.csv", credit.drop(columns=["Age", "Home"]))
    result = drift("-r", ref, "-c", cur)
    assert result.exit_code == 3, result.output
    assert "schema_changed" in result.output
    assert "Age (missing from the current data)" in result.output
    assert "Home (missing from the current data)" in result.output
    as_json = json.loads(drift("-r", ref, "-c", cur, "--json").output)
    assert as_json["verdict"] == "schema_changed"
    assert as_json["features"]["Age"]["problem"] == "missing from the current data"


def test_column_missing_from_reference_is_a_named_schema_change_exit_3(files, credit):
    ref = files("ref.csv", credit.drop(columns=["Income"]))
    cur = files("cur.csv", credit.assign(Extra=1.0))
    result = drift("-r", ref, "-c", cur, "--json")
    assert result.exit_code == 3, result.output
    out = json.loads(result.output)
    assert out["verdict"] == "schema_changed"
    assert out["features"]["Income"]["problem"] == "missing from the reference data"
    assert out["features"]["Extra"]["problem"] == "missing from the reference data"
    assert out["features"]["Age"]["verdict"] == "ok"  # the rest is still compared


def test_evidently_method_names_a_schema_change_too(files, credit):
    ref = files("ref.csv", credit.drop(columns=["Income"]))
    cur = files("cur.csv", credit.drop(columns=["Age"]))
    out = json.loads(drift("-r", ref, "-c", cur, "--method", "evidently", "--json").output)
    assert out["verdict"] == "schema_changed"
    assert out["features"]["Income"]["problem"] == "missing from the reference data"
    assert out["features"]["Age"]["problem"] == "missing from the current data"


def test_spec_feature_missing_from_reference_is_a_schema_change_not_a_traceback(files, credit):
    ref = files("ref.csv", credit.drop(columns=["Debt"]))
    cur = files("cur.csv", credit)
    result = drift("-r", ref, "-c", cur, "--spec", "credit_default")
    assert result.exit_code == 3, result.output
    assert "Debt (missing from the reference data)" in result.output


@pytest.mark.parametrize(
    ("bins", "expected"),
    [
        ("1", "greater than or equal to 2"),
        ("0", "greater than or equal to 2"),
        ("-3", "greater than or equal to 2"),
        ("101", "less than or equal to 100"),
    ],
)
def test_bins_outside_2_to_100_are_refused_with_a_message(files, credit, bins, expected):
    ref = files("ref.csv", credit)
    result = drift("-r", ref, "-c", ref, "--bins", bins)
    assert result.exit_code == 2, result.output  # a usage error, before any file is read
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    assert "Invalid value for '--bins'" in result.output and expected in result.output


def test_empty_reference_is_an_error_not_a_retrain(files, credit):
    ref = files("ref.csv", credit.head(0))
    cur = files("cur.csv", credit)
    result = drift("-r", ref, "-c", cur)
    assert result.exit_code == 1, result.output
    assert "error: the reference table has no rows" in result.output
    assert "retrain" not in result.output


def test_core_refuses_empty_tables_and_one_bin(credit):
    with pytest.raises(DataError, match="reference table has no rows"):
        compare_tables(credit.head(0), credit)
    with pytest.raises(DataError, match="current table has no rows"):
        compare_tables(credit, credit.head(0))
    with pytest.raises(ValueError, match="found 1"):
        compare_tables(credit, credit, bins=1)
    same = compare_tables(credit, credit, bins=2)
    assert not same.problems and max(same.psi.values()) == pytest.approx(0.0)
