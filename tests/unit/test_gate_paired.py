"""The gate with paired statistics: the spec's rule, real models on the same test rows, slices."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from credit_spec import CAT, NUM, credit_spec

from retrainer.config.links import decision_links, model_version
from retrainer.config.settings import get_settings
from retrainer.core.evaluation import compute_metrics, paired_comparison
from retrainer.core.gate import GateDecision, decide
from retrainer.core.training import fit_pipeline, split_frame
from retrainer.spec import SpecError

ROOT = Path(__file__).resolve().parents[2]


def spec(**gate):
    return credit_spec(
        {"primary_metric": "roc_auc", "thresholds": {"roc_auc": {"min": 0.7}}, **gate}
    )


@pytest.fixture(scope="module")
def fitted():
    df = pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")
    s = spec()
    train, test = split_frame(df, s)
    good = fit_pipeline(s, train, NUM, CAT)
    weak_spec = s.model_copy(
        update={"model": s.model.model_copy(update={"params": {"C": 1e-4, "max_iter": 500}})}
    )
    weak = fit_pipeline(weak_spec, train, NUM, CAT)
    return test, good, weak


def gate_for(s, fitted, candidate, champion):
    test = fitted[0]
    paired = paired_comparison(s, candidate, champion, test, (NUM, CAT), (NUM, CAT))
    cand = compute_metrics(s, candidate, test, NUM, CAT)
    champ = compute_metrics(s, champion, test, NUM, CAT)
    return decide(s, cand, champ, "1", comparison=paired["comparison"], slices=paired["slices"])


def test_the_rule_in_force_and_the_mapping_of_min_improvement():
    assert (spec().gate.rule, spec().gate.effective_margin) == ("non_inferiority", 0.01)
    assert (
        spec(min_improvement=0.0).gate.rule,
        spec(min_improvement=0.0).gate.effective_margin,
    ) == (
        "non_inferiority",
        0.01,
    )
    mapped = spec(min_improvement=0.02).gate
    assert (mapped.rule, mapped.effective_margin) == ("superiority", 0.02)
    point = spec(comparison="point", min_improvement=0.005).gate
    assert (point.rule, point.effective_margin) == ("point", 0.005)
    assert spec(comparison="superiority").gate.effective_margin == 0.0
    with pytest.raises(SpecError, match="write the margin as margin"):
        spec(comparison="superiority", min_improvement=0.01)
    with pytest.raises(SpecError, match="confidence"):
        spec(confidence=0.3)


def test_retraining_to_the_same_model_passes_non_inferiority_but_not_superiority(fitted):
    _, good, _ = fitted
    ni = gate_for(spec(), fitted, good, good)
    assert ni.passed, ni.summary()
    assert ni.checks[0].method == "delong" and ni.checks[0].lower is not None
    assert "non_inferiority" in ni.reasons[-1] and "lower bound" in ni.reasons[-1]
    sup = gate_for(spec(comparison="superiority"), fitted, good, good)
    assert not sup.passed
    assert "is not above +0 (superiority, margin 0)" in sup.reasons[0]
    point = gate_for(spec(comparison="point"), fitted, good, good)
    assert point.passed and point.checks[0].lower is None  # today's rule: 0 >= 0


def test_the_record_holds_both_rules_outcomes_and_the_demo_prints_them(fitted):
    from retrainer.cli.demo import gate_outcome

    _, good, _ = fitted
    for s in (spec(), spec(comparison="superiority")):
        record = gate_for(s, fitted, good, good).to_dict()
        test = record["extra"]["comparison"]["metrics"]["roc_auc"]
        rules = test["rules"]
        assert rules["superiority"]["margin"] == 0 and rules["non_inferiority"]["margin"] == 0.01
        assert not rules["superiority"]["passed"] and rules["non_inferiority"]["passed"]
        assert rules[test["comparison"]]["p_value"] == test["p_value"]  # the deciding rule
        line = gate_outcome(record)
        lo, hi = test["bootstrap_interval"]
        assert f"95% lower bound {test['lower']:+.3f} (delong" in line
        assert f"[{lo:+.3f}, {hi:+.3f}]" in line
        assert "superiority (margin 0)" in line and ": rejects" in line
        assert "non-inferiority (margin 0.01)" in line and ": passes" in line
        assert (
            f"{s.gate.rule.replace('_', '-')} (margin {s.gate.effective_margin:g}) in force" in line
        )
    explicit = gate_for(spec(margin=0.02), fitted, good, good).extra["comparison"]
    assert {r["margin"] for r in explicit["metrics"]["roc_auc"]["rules"].values()} == {0.02}


def test_a_clearly_worse_candidate_is_rejected_with_its_interval(fitted):
    _, good, weak = fitted
    d = gate_for(spec(), fitted, weak, good)
    assert not d.passed
    c = d.checks[0]
    assert c.delta < 0 and c.lower < c.delta and c.p_value > 0.05
    record = d.to_dict()
    assert record["extra"]["rule"] == "non_inferiority"
    assert record["extra"]["comparison"]["metrics"]["accuracy"]["test"]["method"].startswith(
        "mcnemar"
    )
    again = GateDecision.from_dict(record)
    assert again.checks[0].lower == c.lower and "lower" in again.table()


def test_a_harmed_slice_blocks_promotion(fitted):
    test, good, _ = fitted

    class WorseForRenters:
        """The good model, except that it scores renters at random."""

        def __init__(self, model):
            self.model, self.classes_ = model, model.classes_

        def _rent(self, X):
            return (X["Home"] == "rent").to_numpy()

        def predict_proba(self, X):
            p = self.model.predict_proba(X).copy()
            rng = np.random.default_rng(0)
            r = self._rent(X)
            noise = rng.random(r.sum())
            p[r] = np.c_[noise, 1 - noise]
            return p

        def predict(self, X):
            return self.classes_[self.predict_proba(X).argmax(axis=1)]

    s = spec(slices=[{"column": "Home"}, {"column": "Age", "bins": 3}], slice_min_rows=50)
    d = gate_for(s, fitted, WorseForRenters(good), good)
    assert not d.passed
    assert any(r.startswith("slice Home=rent") for r in d.reasons), d.reasons
    homes = d.extra["slices"][0]
    assert homes["column"] == "Home" and homes["blocked"]
    assert {sl["slice"] for sl in homes["slices"]} >= {"rent", "owner"}
    assert "HARMED" in d.table()
    fine = gate_for(s, fitted, good, good)
    assert fine.passed and not any(r["blocked"] for r in fine.extra["slices"])


def test_decision_records_follow_the_published_schema(fitted):
    import json
    from importlib import resources

    import jsonschema

    schema = json.loads(
        resources.files("retrainer.core").joinpath("schemas/gate_decision.schema.json").read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    _, good, weak = fitted
    s = spec(slices=[{"column": "Home"}], slice_min_rows=50)
    settings = get_settings()
    for d in (gate_for(s, fitted, good, good), gate_for(s, fitted, weak, good)):
        links = decision_links(settings, "credit_retrain", "manual__1", "abc", "7", "credit", "1")
        links["candidate_version"] = model_version(settings, "credit", "2")
        record = json.loads(json.dumps(replace(d, links=links).to_dict()))  # as logged
        jsonschema.validate(record, schema)
        assert record["links"]["airflow_run"].endswith("/dags/credit_retrain/runs/manual__1")
        assert "/#/experiments/7/runs/abc" in record["links"]["mlflow_run"]
        assert "/#/models/credit/versions/1" in record["links"]["model_version"]
        record["links"]["mlflow_run"] = 7
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(record, schema)
    first = decide(s, {"roc_auc": 0.8}, None, None)  # no champion: no comparison
    links = decision_links(settings, "credit_retrain", "r", "abc", None, "credit", None)
    jsonschema.validate(json.loads(json.dumps(replace(first, links=links).to_dict())), schema)
