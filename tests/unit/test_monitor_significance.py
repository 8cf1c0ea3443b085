"""The monitor's rule: PSI past the limit AND significant (BH across features), exclusions."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer.config.links import decision_links
from retrainer.config.settings import get_settings
from retrainer.core.cbpe import estimated_drop
from retrainer.core.drift import build_profile, compare_to_profile
from retrainer.spec import parse_spec
from retrainer.steps.monitor.decision import RETRAIN, WARN, decide

ROOT = Path(__file__).resolve().parents[2]
NUM = ["Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"]
CAT = ["Home", "Marital", "Records", "Job"]


def spec(**monitoring):
    return parse_spec(
        {
            "name": "credit",
            "task": "classification",
            "data": {"train": "x.csv", "target": "Status"},
            "model": {"estimator": "sklearn.linear_model.LogisticRegression"},
            "gate": {"primary_metric": "roc_auc"},
            "monitoring": monitoring,
        }
    )


@pytest.fixture(scope="module")
def credit():
    df = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    shifted = (df["Age"] >= 40) & (df["Amount"] >= 1000)
    base = df[~shifted].sample(frac=1.0, random_state=0)
    return build_profile(base.iloc[:2500], NUM, CAT, 10), base.iloc[2500:], df[shifted]


def test_the_demo_shift_retrains_with_its_significance(credit):
    profile, _, shifted = credit
    window = shifted.sample(200, random_state=1)
    d = decide(spec(), compare_to_profile(profile, window), len(window))
    assert d.decision == RETRAIN
    assert "Age" in d.features
    assert "significant (BH-adjusted p" in d.reasons[0] and "<= fdr 0.0001" in d.reasons[0]
    age = d.significance["features"]["Age"]
    assert age["drifted"] and age["p_adjusted"] < 1e-4 and age["test"]["method"] == "chi2"
    assert age["noise_floor"] == pytest.approx(10 * (1 / 200 + 1 / 2500), rel=0.2)


def test_a_stable_window_does_not_retrain(credit):
    profile, held_out, _ = credit
    window = held_out.sample(200, random_state=2)
    d = decide(spec(), compare_to_profile(profile, window), len(window))
    assert d.decision != RETRAIN


def test_large_psi_from_noise_on_a_sparse_column_only_warns(credit):
    """A 50-category column in a 200-row window: PSI past 0.25 from noise alone."""
    profile, held_out, _ = credit
    rng = np.random.default_rng(3)
    states = [f"s{i:02d}" for i in range(50)]
    ref = pd.DataFrame({"state": rng.choice(states, 4900)})
    noisy_profile = build_profile(ref, [], ["state"], 10)
    fired = 0
    for _ in range(20):
        window = pd.DataFrame({"state": rng.choice(states, 200)})
        drift = compare_to_profile(noisy_profile, window)
        d = decide(spec(), drift, 200)
        assert d.decision != RETRAIN
        if drift.psi["state"] >= 0.25:
            fired += 1
            assert d.decision == WARN and "not significant" in d.reasons[0]
    assert fired >= 5  # PSI-only would have retrained on these


def test_an_excluded_feature_never_triggers(credit):
    profile, _, shifted = credit
    window = shifted.sample(200, random_state=1)[["Age"]]
    drift = compare_to_profile(profile, window)
    only_age = type(drift)(
        drift.method, drift.rows_reference, drift.rows_current, {"Age": drift.features["Age"]}
    )
    d = decide(spec(exclude=["Age"]), only_age, 200)
    assert d.decision == WARN
    assert "left out of the trigger" in d.reasons[0]
    assert d.significance["excluded"] == ["Age"]


def test_fdr_is_validated():
    from retrainer.errors import SpecError

    with pytest.raises(SpecError, match="fdr"):
        spec(fdr=0)


def test_consecutive_windows_are_required_when_the_spec_asks(credit):
    profile, _, shifted = credit
    window = shifted.sample(200, random_state=1)
    drift = compare_to_profile(profile, window)
    s = spec(consecutive=2)
    first = decide(s, drift, 200, previous=[[]])
    assert first.decision == WARN and "Age" in first.drifted
    assert any("not yet in 2 windows in a row" in r for r in first.reasons)
    second = decide(s, drift, 200, previous=[first.drifted])
    assert second.decision == RETRAIN and "Age" in second.features
    assert decide(spec(), drift, 200, previous=[[]]).decision == RETRAIN  # default: 1 window


def test_monitor_decision_records_follow_the_published_schema(credit):
    import json
    from importlib import resources

    import jsonschema

    schema = json.loads(
        resources.files("retrainer.core")
        .joinpath("schemas/monitor_decision.schema.json")
        .read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    profile, held_out, shifted = credit
    links = decision_links(get_settings(), "credit_monitor", "m__1", "abc", "3", "credit", "2")
    estimate = estimated_drop("roc_auc", 0.82, 0.79, 200).to_dict()
    for frame, rows in ((shifted, 200), (held_out, 200), (held_out, 50)):
        window = frame.sample(rows, random_state=4)
        d = decide(spec(), compare_to_profile(profile, window), rows, estimate=estimate)
        d.links = links
        record = json.loads(json.dumps(d.to_dict()))  # as logged
        jsonschema.validate(record, schema)
        assert record["links"]["model_version"].split("?")[0].endswith("/models/credit/versions/2")
    record["estimate"]["rows"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(record, schema)


def test_the_demo_prints_the_monitor_record(credit):
    from retrainer.cli.demo import monitor_outcome

    profile, _, shifted = credit
    window = shifted.sample(200, random_state=1)
    estimate = estimated_drop("roc_auc", 0.82, 0.79, 200).to_dict()
    record = decide(spec(), compare_to_profile(profile, window), 200, estimate=estimate).to_dict()
    line = monitor_outcome(record)
    top = max(record["psi"], key=lambda k: record["psi"][k] or 0)
    age = record["significance"]["features"][top]
    assert line.startswith(f"retrain (max PSI {top} {record['psi'][top]:.2f}")
    assert f"noise floor {age['noise_floor']:.3f}" in line
    assert f"BH-adjusted p {age['p_adjusted']:.2g}" in line
    assert "estimated roc_auc without labels 0.790 (reference 0.820, drop +0.030)" in line
    support = {"outside_share": 0.34, "limit": 0.1, "within": False}
    record["estimate"]["support"] = support
    assert "(reference 0.820, drop +0.030; 34% of rows outside the reference: not trusted)" in (
        monitor_outcome(record)
    )
