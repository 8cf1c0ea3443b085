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
        # A NaN bound compares false with everything: it would turn the gate's floor off
        (
            lambda r: r["gate"]["thresholds"].update(roc_auc={"min": float("nan")}),
            "gate.thresholds.roc_auc.min: expected input should be a finite number; found nan",
        ),
        (
            lambda r: r["validation"]["columns"]["Age"].update(min=float("nan")),
            "validation.columns.Age.min: expected input should be a finite number",
        ),
        (
            lambda r: r["gate"]["thresholds"].update(roc_auc={"min": 0.9, "max": 0.5}),
            "gate.thresholds.roc_auc: min (0.9) is greater than max (0.5)",
        ),
        # Durations beyond a timedelta's range overflowed inside the DAG files' import
        (
            lambda r: r["monitoring"].update(cooldown="99999999999999999999w"),
            "cooldown: expected a duration of at most 520w (ten years)",
        ),
        (
            lambda r: r["deployment"]["rollout"].update(bake_time="1e9w"),
            "bake_time: expected a duration like 30m",
        ),
        # Seeds numpy takes, checked before a candidate is trained
        (
            lambda r: r["data"].update(random_state=-5),
            "data.random_state: expected input should be greater than or equal to 0",
        ),
        (
            lambda r: r["data"].update(random_state=2**32),
            "data.random_state: expected input should be less than or equal to 4294967295",
        ),
        # Slices: quantile bins 2-100, or finite increasing inner edges
        (
            lambda r: r["gate"].update(slices=[{"column": "Age", "bins": -3}]),
            "gate.slices.0.bins: expected a number of quantile bins from 2 to 100",
        ),
        (
            lambda r: r["gate"].update(slices=[{"column": "Age", "bins": 10**10}]),
            "gate.slices.0.bins: expected a number of quantile bins from 2 to 100",
        ),
        (
            lambda r: r["gate"].update(slices=[{"column": "Age", "bins": [float("nan")]}]),
            "found [nan]",
        ),
        (
            lambda r: r["gate"].update(slices=[{"column": "Age", "bins": [50, 30]}]),
            "gate.slices.0.bins: expected increasing edges; found [50.0, 30.0]",
        ),
        (
            lambda r: r["gate"].update(slices=[{"column": "Age", "bins": []}]),
            "expected 1 to 99 inner edges",
        ),
        # Airflow refuses a bad schedule only when it builds the DAG: the monitor would vanish
        (
            lambda r: r["monitoring"].update(schedule="every tuesday"),
            "monitoring.schedule: not a cron expression",
        ),
        (
            lambda r: r["monitoring"].update(schedule="0 6 * * * *"),
            "monitoring.schedule: expected 5 cron fields (minute hour day month weekday); found 6",
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


@pytest.mark.parametrize("schedule", ["@daily", "@once", "@continuous", "0 6 * * 1-5", None])
def test_schedules_airflow_takes_are_accepted(schedule):
    raw = base()
    raw["monitoring"]["schedule"] = schedule
    assert parse_spec(raw).monitoring.schedule == schedule


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """YAML keeps the last of two equal keys: a second gate block would silently drop the
    first one's thresholds."""
    text = (ROOT / "models" / "credit_default.yaml").read_text()
    path = tmp_path / "credit_default.yaml"
    path.write_text(text + "gate:\n  primary_metric: accuracy\n")
    first = 1 + text.splitlines().index("gate:")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    message = str(exc.value)
    assert "the key 'gate' is given twice in this mapping" in message
    assert f"first on line {first}" in message
    path.write_text("name: credit_default\nx: {a: 1, a: 2}\n")
    with pytest.raises(SpecError, match="the key 'a' is given twice"):
        load_spec(path)
    # a merge key is not a repeat: the explicit key overrides the merged one, as YAML says
    path.write_text("base: &b {k: 1}\nother:\n  <<: *b\n  k: 2\n")
    with pytest.raises(SpecError, match="name: required key is missing"):
        load_spec(path)


def test_an_unforeseen_failure_hides_only_its_own_file(tmp_path, monkeypatch):
    (tmp_path / "credit_default.yaml").write_text(yaml.safe_dump(base()))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(base() | {"name": "other"}))
    import retrainer.spec as spec_module

    real = spec_module.parse_spec

    def parse(raw, source="", *args):
        if raw.get("name") == "other":
            raise OverflowError("int too large to convert to C int")
        return real(raw, source, *args)

    monkeypatch.setattr(spec_module, "parse_spec", parse)
    results = dict(iter_specs(tmp_path))
    assert results[tmp_path / "credit_default.yaml"].name == "credit_default"
    broken = results[tmp_path / "other.yaml"]
    assert isinstance(broken, SpecError)
    assert "other.yaml: cannot be loaded (OverflowError: int too large" in str(broken)


def test_a_fifo_in_the_models_folder_is_not_read(tmp_path):
    """Opening a FIFO blocks until a writer comes: the DAG processor would hang."""
    import os

    (tmp_path / "credit_default.yaml").write_text(yaml.safe_dump(base()))
    os.mkfifo(tmp_path / "zz.yaml")
    assert [p.name for p, _ in iter_specs(tmp_path)] == ["credit_default.yaml"]
