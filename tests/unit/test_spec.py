from pathlib import Path

import pytest
import yaml

from retrainer.errors import SpecError
from retrainer.spec import find_spec, iter_specs, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return yaml.safe_load((ROOT / "models" / "credit_default.yaml").read_text())


def test_shipped_specs_load():
    specs = [s for _, s in iter_specs(ROOT / "models")]
    assert specs and all(not isinstance(s, Exception) for s in specs)
    credit = load_spec(ROOT / "models" / "credit_default.yaml")
    assert credit.experiment_name == "retrainer/credit_default"
    assert credit.retrain_dag_id == "credit_default_retrain"
    assert credit.higher_is_better


def test_defaults_fill_optional_blocks():
    raw = {
        "name": "m",
        "task": "regression",
        "data": {"train": "x.csv", "target": "y"},
        "model": {"estimator": "sklearn.linear_model.Ridge"},
        "gate": {"primary_metric": "rmse"},
    }
    spec = parse_spec(raw)
    assert spec.validation.min_rows == 100
    assert spec.monitoring.psi_retrain == 0.25
    assert spec.deployment.approval == "auto"
    assert not spec.higher_is_better


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r.pop("task"), "task: required key is missing"),
        (
            lambda r: r.update(task="clustering"),
            "task: expected input should be 'classification' or 'regression'; found 'clustering'",
        ),
        (lambda r: r["data"].update(targt="x"), "data.targt: unknown key"),
        (
            lambda r: r["gate"].update(primary_metric="rmse"),
            "'rmse' is not a classification metric",
        ),
        (lambda r: r["gate"]["thresholds"].update(r2={"min": 0.1}), "gate.thresholds.r2"),
        (
            lambda r: r["data"].update(test_size=1.5),
            "data.test_size: expected input should be less than 1",
        ),
        (
            lambda r: r["validation"]["columns"]["Age"].update(min=200),
            "min (200.0) is greater than max (100.0)",
        ),
        (
            lambda r: r["model"].update(estimator="HistGradientBoosting"),
            "model.estimator: expected a dotted class path",
        ),
        (
            lambda r: r["monitoring"].update(psi_warn=0.5),
            "psi_warn (0.5) must not exceed psi_retrain (0.25)",
        ),
        (
            lambda r: r["data"]["features"]["numeric"].append("Home"),
            "both numeric and categorical: ['Home']",
        ),
        (
            lambda r: r["data"]["features"]["numeric"].append("Status"),
            "the target 'Status' is listed as a feature",
        ),
        (  # the registered model's description: MLflow's PostgreSQL column holds 5,000
            lambda r: r.update(description="x" * 5001),
            "description: expected string should have at most 5000 characters",
        ),
    ],
)
def test_bad_spec_names_file_key_expected_and_found(mutate, expected):
    raw = base()
    mutate(raw)
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "models/credit_default.yaml")
    message = str(exc.value)
    assert message.startswith("models/credit_default.yaml: ")
    assert expected in message


def test_every_error_is_listed_at_once():
    raw = base()
    raw["task"] = "x"
    raw["data"]["bogus"] = 1
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "f.yaml")
    assert "task:" in str(exc.value) and "data.bogus" in str(exc.value)


def test_file_errors(tmp_path):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        load_spec(bad_yaml)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(not_mapping)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_name_must_match_file(tmp_path):
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(base()))
    with pytest.raises(SpecError, match="expected the file name 'other'"):
        load_spec(tmp_path / "other.yaml")


def test_broken_spec_does_not_hide_others(tmp_path):
    (tmp_path / "credit_default.yaml").write_text(yaml.safe_dump(base()))
    (tmp_path / "zzz.yaml").write_text("name: zzz\n")
    results = dict(iter_specs(tmp_path))
    assert not isinstance(results[tmp_path / "credit_default.yaml"], Exception)
    assert isinstance(results[tmp_path / "zzz.yaml"], SpecError)


def test_find_spec(tmp_path):
    (tmp_path / "credit_default.yaml").write_text(yaml.safe_dump(base()))
    assert find_spec(tmp_path, "credit_default").name == "credit_default"
    with pytest.raises(SpecError, match="known models: \\['credit_default'\\]"):
        find_spec(tmp_path, "nope")
