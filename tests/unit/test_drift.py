"""The PSI engine: profiles, known values, bad input, and Evidently's own PSI to 1e-9."""

import math

import numpy as np
import pandas as pd
import pytest

from retrainer.core.drift import (
    EPSILON,
    ReferenceProfile,
    build_profile,
    compare_frames,
    compare_to_profile,
    noise_floor,
    numeric_counts,
    psi_from_shares,
    quantile_edges,
)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
NUM = ["Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"]
CAT = ["Home", "Marital", "Records", "Job"]


@pytest.fixture(scope="module")
def credit():
    return pd.read_csv(ROOT / "examples" / "credit" / "credit_data.csv")


def test_psi_known_values():
    # Two buckets 50/50 vs 25/75: (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi_from_shares(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)
    assert psi_from_shares(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5])) == 0.0
    # An empty bucket counts as EPSILON, so PSI stays finite.
    value = psi_from_shares(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    assert value == pytest.approx(
        (0.5 - 1) * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    )


def test_quantile_edges_and_counts_with_nulls_and_open_ends():
    x = np.arange(1, 101, dtype=float)
    edges = quantile_edges(x, 4)
    assert edges.tolist() == pytest.approx([25.75, 50.5, 75.25])
    counts = numeric_counts(np.array([-1e9, 25.75, 30, 60, 1e9, np.nan]), edges)
    # right-closed bins: 25.75 falls in the first; values beyond the training range still count
    assert counts.tolist() == [2, 1, 1, 1, 1]
    # ties merge bins: a mostly-zero column keeps one edge at 0, not nine
    assert quantile_edges(np.array([0.0] * 90 + list(range(1, 11))), 10).tolist()[0] == 0.0


def test_profile_round_trip_and_shares(credit):
    profile = build_profile(credit, NUM, CAT, bins=10)
    again = ReferenceProfile.from_dict(profile.to_dict())
    assert again.features == profile.features
    for f in profile.features.values():
        assert sum(f.shares) == pytest.approx(1.0)
    income = profile.features["Income"]
    assert income.null_share == pytest.approx(credit["Income"].isna().mean())
    assert income.shares[-1] == pytest.approx(income.null_share)  # nulls are their own bucket
    assert set(profile.features["Home"].categories) == set(credit["Home"].dropna().unique())


def test_same_population_is_quiet_and_a_shift_is_loud(credit):
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(credit))
    ref, cur = credit.iloc[idx[:2500]], credit.iloc[idx[2500:]]
    profile = build_profile(ref, NUM, CAT, 10)
    quiet = compare_to_profile(profile, cur)
    floor = noise_floor(11, len(cur), len(ref))
    assert max(quiet.psi.values()) < 4 * floor < 0.1
    older = compare_to_profile(profile, credit[credit["Age"] >= 45])
    assert older.psi["Age"] > 1.0 and older.psi["Time"] < 0.25


def test_bad_current_data_is_reported_not_raised(credit):
    profile = build_profile(credit, NUM, CAT, 10)
    bad = credit.drop(columns=["Income"]).assign(
        Age="old", Price=None, Home="houseboat", Debt=lambda d: d["Debt"].astype(str)
    )
    result = compare_to_profile(profile, bad)
    assert result.problems["Income"] == "missing from the current data"
    assert result.problems["Age"].startswith("type changed")
    assert result.problems["Price"].startswith("all 4454 values are null")
    # Numbers that arrive as text are still numbers; an unseen category is drift, not an error.
    assert "Debt" not in result.problems and result.psi["Debt"] == pytest.approx(0.0, abs=1e-12)
    home = result.features["Home"]
    assert home.unseen == ["houseboat"] and result.psi["Home"] > 1
    empty = compare_to_profile(profile, credit.head(0))
    assert all(math.isnan(f.psi) for f in empty.features.values()) and not empty.problems


def test_categorical_keys_ignore_int_vs_float_and_text():
    ref = pd.DataFrame({"c": [1, 2, 2, None]})
    cur = pd.DataFrame({"c": ["1", 2.0, "2", np.nan]})
    result = compare_frames(ref, cur, numeric=[], categorical=["c"])
    assert result.psi["c"] == pytest.approx(0.0, abs=1e-12)


def evidently_psi(ref, cur, num, cat):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    snapshot = Report([DataDriftPreset(method="psi")]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    return {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }


@pytest.mark.parametrize(
    "split",
    [
        lambda df: (df[df["Age"] < 40], df[df["Age"] >= 30]),  # a real shift
        lambda df: (df.sample(frac=0.5, random_state=1), df.sample(frac=0.3, random_state=2)),
        lambda df: (df[df["Records"] == "no"], df[df["Records"] == "yes"]),  # a one-category column
    ],
    ids=["shifted", "same-population", "constant-column"],
)
def test_evidently_mode_equals_evidently(credit, split):
    ref, cur = split(credit)
    theirs = evidently_psi(ref, cur, NUM, CAT)
    ours = compare_frames(ref, cur, NUM, CAT, method="evidently").psi
    assert set(ours) == set(theirs)
    for col, value in theirs.items():
        assert ours[col] == pytest.approx(value, abs=1e-9, rel=0), col


def test_evidently_mode_on_integer_and_discrete_columns():
    rng = np.random.default_rng(3)
    ref = pd.DataFrame(
        {
            "small_range_int": rng.integers(0, 25, 3000),  # Sturges width < 1: numpy uses 1
            "few_values": rng.choice([0.5, 1.5, 2.5], 3000),  # <= 20 distinct: value by value
            "wide": rng.normal(0, 1, 3000),
        }
    )
    cur = pd.DataFrame(
        {
            "small_range_int": rng.integers(3, 30, 2000),
            "few_values": rng.choice([0.5, 1.5, 3.5], 2000),
            "wide": rng.normal(0.3, 1.2, 2000),
        }
    )
    num = list(ref.columns)
    theirs = evidently_psi(ref, cur, num, [])
    ours = compare_frames(ref, cur, num, [], method="evidently").psi
    for col, value in theirs.items():
        assert ours[col] == pytest.approx(value, abs=1e-9, rel=0), col
