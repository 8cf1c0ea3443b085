"""A small spec over the credit data's columns, for unit tests of the gate and the monitor."""

from typing import Any

from retrainer.spec import ModelSpec, parse_spec

NUM = ["Seniority", "Time", "Age", "Expenses", "Income", "Assets", "Debt", "Amount", "Price"]
CAT = ["Home", "Marital", "Records", "Job"]


def credit_spec(gate: dict[str, Any], monitoring: dict[str, Any] | None = None) -> ModelSpec:
    raw: dict[str, Any] = {
        "name": "credit",
        "task": "classification",
        "data": {
            "train": "x.csv",
            "target": "Status",
            "positive_class": "bad",
            "features": {"numeric": NUM, "categorical": CAT},
        },
        "model": {
            "estimator": "sklearn.linear_model.LogisticRegression",
            "params": {"max_iter": 500},
        },
        "gate": gate,
    }
    if monitoring is not None:
        raw["monitoring"] = monitoring
    return parse_spec(raw)
