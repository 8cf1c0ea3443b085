"""`retrainer drift --spec`: the monitor's verdict on two tables, with noise floor and p-values."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from retrainer.cli import app
from retrainer.core.drift import compare_frames
from retrainer.spec import load_spec
from retrainer.steps.monitor.decision import decide

ROOT = Path(__file__).resolve().parents[2]
CREDIT = ROOT / "examples" / "credit"
runner = CliRunner()


@pytest.fixture
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(ROOT / "models" / "credit_default.yaml", folder)
    monkeypatch.setenv("RETRAINER_MODELS_DIR", str(folder))
    monkeypatch.setenv("RETRAINER_HOME", str(tmp_path / "state"))
    return folder


def run(reference, current, *extra):
    return runner.invoke(
        app, ["drift", "-r", str(reference), "-c", str(current), "--spec", "credit_default", *extra]
    )


def test_the_shift_is_a_retrain_with_significance_per_feature(models, tmp_path):
    shifted = tmp_path / "shifted.csv"
    pd.read_csv(CREDIT / "traffic" / "shifted.csv").head(200).to_csv(shifted, index=False)
    result = run(CREDIT / "batches" / "base.csv", shifted, "--json")
    assert result.exit_code == 3, result.output
    out = json.loads(result.output)
    assert out["verdict"] == "retrain"
    assert any("significant" in r for r in out["reasons"])
    age = out["features"]["Age"]
    assert age["verdict"] == "retrain" and age["p_adjusted"] < 1e-4
    assert age["noise_floor"] > 0 and age["test"] in ("chi2", "monte_carlo")
    # the same verdict as the monitor's decision on the same two tables
    spec = load_spec(models / "credit_default.yaml")
    feats = spec.data.features
    drift = compare_frames(
        pd.read_csv(CREDIT / "batches" / "base.csv"),
        pd.read_csv(shifted),
        feats.numeric,
        feats.categorical,
        bins=spec.monitoring.psi_bins,
    )
    assert decide(spec, drift, drift.rows_current).decision == out["verdict"]


def test_the_table_shows_noise_floor_and_p_values(models, tmp_path):
    stable = tmp_path / "stable.csv"
    pd.read_csv(CREDIT / "traffic" / "base.csv").head(300).to_csv(stable, index=False)
    result = run(CREDIT / "batches" / "base.csv", stable)
    assert result.exit_code == 0, result.output
    assert "chi2" in result.output  # the test column (header words wrap at 80 columns)
    assert "BH-adjusted p <= 0.0001" in result.output


def test_too_few_rows_is_the_monitors_insufficient_data(models, tmp_path):
    few = tmp_path / "few.csv"
    pd.read_csv(CREDIT / "traffic" / "shifted.csv").head(50).to_csv(few, index=False)
    result = run(CREDIT / "batches" / "base.csv", few, "--json")
    assert json.loads(result.output)["verdict"] == "insufficient_data"
    assert np.isfinite(json.loads(result.output)["max_psi"])
