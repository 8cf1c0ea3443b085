"""Model cards from facts: Markdown, Model Card Toolkit JSON (validated against its published
schema), Hugging Face metadata; gate fields the renderer does not know still show up."""

import copy

import jsonschema
import pytest
import yaml

from retrainer.core.card import (
    mct_schema,
    to_hf_metadata,
    to_html,
    to_markdown,
    to_mct,
    validate_mct,
)

FACTS = {
    "model": "credit_default",
    "version": "2",
    "aliases": ["champion"],
    "created": 1795000000000,
    "model_uri": "models:/credit_default/2",
    "description": "Probability that a credit application defaults.",
    "task": "classification",
    "owner": "credit-risk",
    "card": {
        "intended_use": "Rank applications for manual review.",
        "users": ["credit analysts"],
        "out_of_scope": ["automatic rejection"],
        "limitations": ["Trained on one lender's applicants."],
        "ethical_considerations": ["Age is a feature."],
        "contact": "risk@example.org",
        "license": "MIT",
        "time_column": None,
    },
    "data": {
        "source": "/data/credit/batches",
        "digest": "abcdef0123456789",
        "rows": 4000,
        "bytes": 1200000,
        "time_range": None,
        "validation": {"summary": "21 of 21 expectations passed on 4000 rows"},
        "snapshot": "/work/credit_default/run/data.parquet",
        "snapshot_exists": True,
        "retention": "kept while the version is registered",
    },
    "training": {
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": "200"},
        "target": "Status",
        "numeric": ["Age", "Income"],
        "categorical": ["Home"],
        "train_rows": "3200",
        "test_rows": "800",
        "code_version": "git:0123abcd",
        "lock_digest": "sha256:ff",
        "seed": "split=42,estimator=42",
        "reason": "monitor: PSI of Age 0.41",
        "trigger_origin": "monitor",
        "dag_run_id": "drift__x",
        "mlflow_run_id": "r2",
    },
    "evaluation": {
        "decision": "passed",
        "passed": True,
        "primary_metric": "roc_auc",
        "reasons": ["roc_auc improved by 0.02 over champion v1"],
        "checks": [
            {
                "metric": "roc_auc",
                "candidate": 0.83,
                "champion": 0.81,
                "delta": 0.02,
                "passed": True,
                "ci_low": 0.005,
                "ci_high": 0.034,
                "p_value": 0.003,
            }
        ],
        "candidate_metrics": {"roc_auc": 0.83, "f1": 0.6},
        "champion_metrics": {"roc_auc": 0.81, "f1": 0.58},
        "champion_version": "1",
        "min_improvement": 0.0,
        "extra": {
            "slices": [
                {
                    "slice": "Home=rent",
                    "metric": "roc_auc",
                    "candidate": 0.8,
                    "lower": 0.7,
                    "upper": 0.86,
                },
                {
                    "slice": "Home=owner",
                    "metric": "roc_auc",
                    "candidate": 0.85,
                    "lower": 0.8,
                    "upper": 0.9,
                },
            ]
        },
    },
    "cost": {
        "wall_s": 12.3,
        "cpu_s": 10.1,
        "peak_mb": 512.0,
        "rows": 4000,
        "data_bytes": 1200000,
        "tasks": {
            "train_candidate": {"wall_s": 8.0, "cpu_s": 7.5, "peak_mb": 512.0, "startup_s": 2.0}
        },
    },
    "recent_retrains": {
        "days": 30,
        "runs": 3,
        "registered": 2,
        "drift_triggered": 1,
        "wall_s": 40.0,
        "cpu_s": 33.0,
    },
    "drift": {
        "checks": 2,
        "decisions": {"ok": 2},
        "triggered": 0,
        "last": {"decision": "ok", "max PSI": 0.04},
    },
    "rollout": [
        {
            "time": 1795000100000,
            "action": "promote",
            "from_version": "1",
            "to_version": "2",
            "triggered_by": "manual",
            "reason": "retrain passed the gate",
        }
    ],
    "approvals": [],
    "generated": 1795000200000,
}


def test_markdown_says_every_section_and_renders_unknown_gate_fields():
    md = to_markdown(FACTS)
    for heading in (
        "# Model card: credit_default v2",
        "## Intended use",
        "## Limitations",
        "## Data",
        "## Training",
        "## Evaluation",
        "## Comparison with the champion it replaced",
        "## Cost",
        "## Drift while champion",
        "## Rollout history and approvals",
    ):
        assert heading in md
    assert "Rank applications for manual review." in md and "one lender's" in md
    assert "`abcdef0123456789`" in md and "git:0123abcd" in md and "sha256:ff" in md
    # The interval and p-value the gate recorded, and the per-slice table.
    assert "ci_low" in md and "0.005" in md and "p_value" in md
    assert "Home=rent" in md and "**slices**" in md
    assert "| roc_auc | 0.83 | 0.81 | 0.02 |" in md  # comparison with v1
    assert "12.3 s wall" in md and "3 (2 registered, 1 drift-triggered)" in md
    assert "| promote | 1 | 2 | manual |" in md


def test_mct_json_validates_against_the_published_schema():
    card = to_mct(FACTS)
    validate_mct(card)
    perf = card["quantitative_analysis"]["performance_metrics"]
    auc = next(p for p in perf if p["type"] == "roc_auc" and "slice" not in p)
    assert auc["confidence_interval"] == {"lower_bound": "0.005", "upper_bound": "0.034"}
    rent = next(p for p in perf if p.get("slice") == "Home=rent")
    assert rent["confidence_interval"]["lower_bound"] == "0.7"
    assert card["model_details"]["licenses"] == [{"identifier": "MIT"}]
    assert card["model_details"]["version"]["date"].startswith("2026-")
    assert card["considerations"]["limitations"] == [
        {"description": "Trained on one lender's applicants."}
    ]


def test_the_schema_check_bites():
    card = to_mct(FACTS)
    bad = copy.deepcopy(card)
    bad["model_details"]["owners"] = "credit-risk"  # must be a list of owners
    with pytest.raises(jsonschema.ValidationError):
        validate_mct(bad)
    bad = copy.deepcopy(card)
    bad["surprise"] = 1  # the schema forbids extra top-level keys
    with pytest.raises(jsonschema.ValidationError):
        validate_mct(bad)
    assert mct_schema()["title"] == "Model Card"


def test_a_first_version_without_card_fields_still_validates():
    bare = copy.deepcopy(FACTS)
    bare["card"] = {}
    bare["evaluation"] = {}
    bare["cost"] = None
    bare["rollout"] = []
    md = to_markdown(bare)
    assert "Not stated in the spec (`card.intended_use`)" in md
    assert "it was the first version" in md and "Never promoted" in md
    validate_mct(to_mct(bare))


def test_hugging_face_metadata_has_model_index_results():
    text = to_hf_metadata(FACTS)
    assert text.startswith("---\n") and text.endswith("---\n")
    meta = yaml.safe_load(text.strip("-\n"))
    result = meta["model-index"][0]["results"][0]
    assert meta["model-index"][0]["name"] == "credit_default-v2"
    assert result["task"]["type"] == "tabular-classification"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"f1": 0.6, "roc_auc": 0.83}
    assert meta["license"] == "mit" and meta["library_name"] == "sklearn"


def test_html_has_the_tables():
    page = to_html(to_markdown(FACTS), "credit_default v2")
    assert "<table>" in page and "<h2>Evaluation</h2>" in page


def test_time_range_reads_the_spec_time_column():
    import pandas as pd

    from retrainer.spec import parse_spec
    from retrainer.steps.provenance import seeds, time_range

    raw = {
        "name": "m",
        "task": "regression",
        "data": {"train": "x.csv", "target": "y"},
        "model": {"estimator": "sklearn.linear_model.Ridge", "params": {"random_state": 7}},
        "gate": {"primary_metric": "rmse"},
        "card": {"time_column": "day"},
    }
    spec = parse_spec(raw)
    df = pd.DataFrame({"day": ["2026-01-03", None, "2026-01-01"], "y": [1, 2, 3]})
    assert time_range(spec, df) == "2026-01-01 .. 2026-01-03 (day)"
    assert time_range(spec, df.drop(columns=["day"])) is None
    assert seeds(spec) == "split=42,estimator=7"


def test_a_long_description_is_cut_at_a_line_end_to_fit_mlflow():
    from retrainer.steps.card import MAX_DESCRIPTION, TRUNCATED, fit_description

    short = "summary\n\n# Model card: m v1\n"
    assert fit_description(short) == short
    lines = [f"| slice {i} | {i / 7:.4f} | {'x' * 40} |" for i in range(400)]
    long = "summary\n\n" + "\n".join(lines)
    cut = fit_description(long)
    assert len(long) > MAX_DESCRIPTION >= len(cut) and cut.endswith(TRUNCATED)
    kept = cut.removesuffix(TRUNCATED)
    assert long.startswith(kept) and kept.split("\n")[-1] in lines  # whole lines only


def test_values_from_the_data_cannot_add_headings_links_images_or_cells():
    """A category, a time value or a reason quoting them is data: in the card it reads as
    written, and opens nothing of its own (the attacker only needs to land a batch)."""
    facts = copy.deepcopy(FACTS)
    hostile = (
        "zz\n\n## Approved for automated rejections\n\n[Full card (sign in)]"
        "(https://attacker.example/login) ![](https://attacker.example/t.png) <b>x</b> `y"
    )
    facts["data"]["time_range"] = f"2026-01-01 .. {hostile}"
    facts["training"]["reason"] = hostile
    facts["training"]["categorical"] = ["Home", hostile]
    facts["evaluation"]["reasons"] = [f"slice Home={hostile}: harmed"]
    facts["evaluation"]["checks"][0]["note"] = "a\\| harmed=no \\| " + hostile
    facts["data"]["source"] = "/data/`x`\n## y"
    md = to_markdown(facts)
    html = to_html(md, "credit_default v2")
    assert "Approved for automated rejections" in html  # shown, as text
    assert "<h2>Approved" not in html
    assert "attacker.example/login" in html and 'href="https://attacker.example' not in html
    assert "<img" not in html and "<b>x</b>" not in html
    assert "## Approved" not in md.replace("\\#\\# Approved", "")
    # the note stays one cell of its table, backslashes and pipes as written
    assert "<td>a\\| harmed=no \\| zz  ## Approved for automated rejections" in html
