"""The rollout's spec block and its decisions (core.rollout), without serving: pure functions on
serving's status bodies as the contract defines them (README: Safe rollout)."""

import json
from importlib import resources

import jsonschema
import numpy as np
import pytest
from tests.unit.credit_spec import credit_spec

from retrainer.core.comparison import Scored, compare
from retrainer.core.rollout import (
    RolloutStatus,
    decide_canary,
    decide_shadow,
    shadow_ready,
    wilson_lower,
)
from retrainer.errors import SpecError
from retrainer.spec import RolloutSpec, parse_spec

SCHEMA = json.loads(
    resources.files("retrainer.core").joinpath("schemas/rollout_decision.schema.json").read_text()
)


def rollout(**kw) -> RolloutSpec:
    return RolloutSpec(strategy="shadow_canary", **kw)


def status(
    mode="shadow",
    rows=1000,
    agree=1000,
    by_class=None,
    champ=(100, 0, 1.0),
    chal=(100, 0, 1.0),
    fallbacks=0,
    rel=None,
    paired=(0, None, None),
) -> RolloutStatus:
    return RolloutStatus.from_dict(
        {
            "model": "credit",
            "mode": mode,
            "champion": "1",
            "challenger": "2",
            "fraction": 0.1,
            "key": None,
            "step_started": "2026-11-23T22:00:00+00:00",
            "stats": {
                "champion": {
                    "requests": champ[0],
                    "rows": champ[0],
                    "errors": champ[1],
                    "predict_p99_ms": champ[2],
                },
                "challenger": {
                    "requests": chal[0],
                    "rows": chal[0],
                    "errors": chal[1],
                    "fallbacks": fallbacks,
                    "predict_p99_ms": chal[2],
                },
                "mirrored": {
                    "rows": rows,
                    "dropped": 0,
                    "agree": agree,
                    "disagree_by_class": by_class or {},
                    "mean_abs_rel_diff": rel,
                },
                "paired_latency": {
                    "calls": paired[0],
                    "challenger_p99_ms": paired[1],
                    "champion_p99_ms": paired[2],
                },
            },
        }
    )


def valid(decision):
    record = json.loads(json.dumps(decision.to_dict()))
    jsonschema.validate(record, SCHEMA)
    return record


def test_schema_is_valid_and_every_decision_follows_it():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    r = rollout()
    for d in (
        decide_shadow("classification", r, status(), 60),
        decide_shadow("classification", r, status(agree=800, by_class={"bad->good": 200}), 60),
        decide_shadow("regression", r, status(rel=0.5), 60),
        decide_canary(r, status(mode="canary"), 0, 1),
        decide_canary(r, status(mode="canary", chal=(10, 5, 1.0)), 1, 1e6),
    ):
        valid(d)


def test_wilson_lower_bound():
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(100, 100) < 1.0
    assert wilson_lower(950, 1000) == pytest.approx(0.9369, abs=2e-3)
    assert wilson_lower(95, 100) < wilson_lower(950, 1000) < 0.95  # more rows, tighter bound


def test_identical_challenger_passes_the_shadow():
    d = decide_shadow("classification", rollout(), status(), 120)
    assert d.outcome == "pass" and not d.stopped, d.table()


def test_disagreement_stops_the_shadow_and_names_the_classes():
    d = decide_shadow(
        "classification",
        rollout(),
        status(agree=880, by_class={"bad->good": 110, "good->bad": 10}),
        120,
        segments=[{"column": "Records", "value": "yes", "rows": 150, "disagree": 100}],
    )
    assert d.outcome == "stop"
    text = " ".join(d.reasons)
    assert "bad->good 110, good->bad 10" in text and "Records=yes" in text
    assert next(c for c in d.checks if c.name == "agreement").passed is False


def test_agreement_is_judged_on_its_lower_bound_not_the_point():
    # 96% agreement on 100 rows: point above 0.95, lower bound below it -> stop
    d = decide_shadow("classification", rollout(), status(rows=100, agree=96), 60)
    assert d.outcome == "stop"
    d = decide_shadow("classification", rollout(), status(rows=10000, agree=9800), 60)
    assert d.outcome == "pass"


def test_no_mirrored_rows_stops_with_a_reason():
    d = decide_shadow("classification", rollout(), status(rows=0, agree=0), 3600)
    assert d.outcome == "stop" and "no mirrored rows" in d.reasons[0]


def test_regression_relative_difference():
    r = rollout(max_relative_difference=0.05)
    assert decide_shadow("regression", r, status(rel=0.01), 60).outcome == "pass"
    assert decide_shadow("regression", r, status(rel=0.2), 60).outcome == "stop"


def test_challenger_errors_and_latency_stop_the_shadow():
    r = rollout()
    d = decide_shadow("classification", r, status(chal=(90, 10, 1.0)), 60)
    assert d.outcome == "stop" and any("error_rate" in x for x in d.reasons)
    slow = decide_shadow("classification", r, status(paired=(1000, 40.0, 4.0)), 60)
    assert slow.outcome == "stop" and any("p99_ratio" in x for x in slow.reasons)
    assert "paired calls on the same rows" in slow.checks[-2].note
    # too few paired calls for a p99: not judged
    few = decide_shadow("classification", r, status(paired=(999, 40.0, 4.0)), 60)
    assert few.outcome == "pass" and "not judged: 999 paired" in next(
        c.note for c in few.checks if c.name == "p99_ratio"
    )
    # a sub-floor difference is timer noise, not a breach
    assert decide_shadow("classification", r, status(paired=(1000, 0.9, 0.2)), 60).outcome == "pass"


def test_latency_is_judged_on_paired_calls_not_on_unlike_ones():
    """In shadow the challenger predicts batches of mirrored rows (hundreds), the champion live
    requests (a few rows); in canary the challenger predicts in a thread, the champion on the
    event loop: their own p99s are not comparable, the paired ones are, in both modes."""
    r = rollout()
    unlike = status(champ=(500, 0, 4.0), chal=(500, 0, 40.0), paired=(3000, 12.0, 11.0))
    d = decide_shadow("classification", r, unlike, 60)
    check = next(c for c in d.checks if c.name == "p99_ratio")
    assert d.outcome == "pass" and check.value == pytest.approx(12.0 / 11.0)
    canary = status(mode="canary", champ=(500, 0, 4.0), chal=(500, 0, 40.0), paired=(3000, 12, 11))
    assert decide_canary(r, canary, 0, 1).outcome == "hold"  # no breach: bakes on
    # a challenger truly slower on the same rows is rolled back in canary
    slow = status(mode="canary", champ=(500, 0, 4.0), chal=(500, 0, 4.5), paired=(3000, 40, 4))
    d = decide_canary(r, slow, 0, 1)
    assert d.outcome == "rollback" and any("p99_ratio" in x for x in d.reasons)


def test_paired_labels_use_the_gate_statistics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    good = np.where(rng.random(2000) < 0.9, y, 1 - y)
    bad = np.where(rng.random(2000) < 0.6, y, 1 - y)

    def scored(pred):
        p1 = np.where(pred == 1, 0.8, 0.2)
        return Scored(pred, np.column_stack([1 - p1, p1]))

    worse = compare("classification", ["accuracy"], y, scored(bad), scored(good), margin=0.01)
    same = compare("classification", ["accuracy"], y, scored(good), scored(good), margin=0.01)
    r = rollout()
    stop = decide_shadow("classification", r, status(), 60, worse, "accuracy")
    assert stop.outcome == "stop" and any("labelled mirrored rows" in x for x in stop.reasons)
    assert valid(stop)["extra"]["paired"]["metrics"]["accuracy"]["method"]
    assert decide_shadow("classification", r, status(), 60, same, "accuracy").outcome == "pass"


def test_shadow_ready_on_rows_or_time():
    r = rollout(min_rows=500, max_duration="10m", check_interval="1m")
    assert not shadow_ready(r, status(rows=499), 60)
    assert shadow_ready(r, status(rows=500), 60)
    assert shadow_ready(r, status(rows=3), 600)


def test_canary_holds_advances_promotes_and_rolls_back():
    r = rollout(bake_time="10m", canary_steps=[0.1, 1.0])
    ok = status(mode="canary")
    assert decide_canary(r, ok, 0, 30).outcome == "hold"
    assert decide_canary(r, ok, 0, 600).outcome == "next"
    assert decide_canary(r, ok, 1, 600).outcome == "promote"
    # a breach rolls back at once, before the bake time
    broken = status(mode="canary", chal=(50, 50, 1.0), fallbacks=50)
    d = decide_canary(r, broken, 0, 5)
    assert d.outcome == "rollback" and "50 answered by the champion" in " ".join(d.reasons)
    labelled = {"metric": "roc_auc", "challenger": 0.70, "champion": 0.80, "rows": 300}
    assert decide_canary(r, ok, 1, 600, labelled).outcome == "rollback"
    labelled["challenger"] = 0.795
    assert decide_canary(r, ok, 1, 600, labelled).outcome == "promote"


def test_canary_after_a_serving_restart_holds():
    r = rollout(bake_time="1s")
    assert decide_canary(r, status(mode="none"), 0, 100).outcome == "hold"


def test_default_is_direct():
    spec = credit_spec({"primary_metric": "roc_auc"})
    assert spec.deployment.rollout.strategy == "direct"
    assert not spec.deployment.rollout.shadow and not spec.deployment.rollout.canary


@pytest.mark.parametrize(
    ("rollout_block", "message"),
    [
        ({"strategy": "blue_green"}, "strategy"),
        ({"shadow_fraction": 0}, "shadow_fraction"),
        ({"shadow_fraction": 1.5}, "shadow_fraction"),
        ({"canary_steps": [0.5, 0.25, 1.0]}, "increasing fractions ending at 1.0"),
        ({"canary_steps": [0.05, 0.25]}, "increasing fractions ending at 1.0"),
        ({"canary_steps": []}, "at least one step"),
        ({"canary_steps": [0, 1.0]}, "each step is a fraction in (0, 1]"),
        ({"bake_time": "soon"}, "deployment.rollout.bake_time: expected a duration"),
        ({"check_interval": "0s"}, "check_interval: must be longer than 0"),
        ({"check_interval": "2h", "max_duration": "1h"}, "longer than max_duration"),
        ({"key": "customer_id"}, "'customer_id' is not a listed feature"),
        ({"on_new_version": "queue"}, "on_new_version"),
        ({"slo": {"max_p99_ratio": 0.5}}, "max_p99_ratio"),
    ],
)
def test_rollout_spec_errors_are_clear(rollout_block, message):
    raw = credit_spec({"primary_metric": "roc_auc"}).model_dump(exclude_defaults=True)
    raw["deployment"] = {"rollout": rollout_block}
    with pytest.raises((SpecError, ValueError)) as err:
        parse_spec(raw)
    assert message in str(err.value)


def test_rollout_key_must_be_a_listed_feature():
    raw = credit_spec({"primary_metric": "roc_auc"}).model_dump(exclude_defaults=True)
    raw["deployment"] = {"rollout": {"strategy": "canary", "key": "Home", "bake_time": "90s"}}
    spec = parse_spec(raw)
    assert spec.deployment.rollout.key == "Home" and spec.deployment.rollout.bake_seconds == 90
