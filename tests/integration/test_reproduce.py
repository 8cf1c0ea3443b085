"""A version explains and rebuilds itself: `retrainer reproduce` from the recorded snapshot (and
a clear report once the snapshot is gone), the snapshot retention rule, the card through the
CLI and its update on promotion. Real MLflow registry, real fits."""

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import testenv
from conftest import register_version
from retrainer.cli import app
from retrainer.config.settings import RunContext, get_settings

pytestmark = pytest.mark.integration
MODEL = "credit_repro"
runner = CliRunner()


def spec(name=MODEL):
    from retrainer.spec import load_spec

    return load_spec(testenv.MODELS / f"{name}.yaml")


def client():
    from retrainer.stores.tracking import mlflow_client

    return mlflow_client(get_settings())


@pytest.fixture(scope="module")
def versions(airflow_db):
    return register_version(MODEL, f"repro-v1-{time.time_ns()}"), register_version(
        MODEL, f"repro-v2-{time.time_ns()}"
    )


def test_a_version_rebuilds_to_identical_predictions(versions):
    from retrainer.steps.reproduce import reproduce

    result = reproduce(f"{MODEL}/{versions[0]}")
    assert result.status == "identical", result.lines()
    assert result.max_difference is not None and result.max_difference <= 1e-9
    assert result.labels_differ == 0 and result.rows > 500
    assert all(c["recorded"] == c["now"] for c in result.checks.values()), result.checks
    assert set(result.checks) == {"code version", "lock digest", "seeds", "data digest"}


def test_a_regression_version_rebuilds_through_the_cli(airflow_db):
    register_version("diabetes_repro", f"repro-d1-{time.time_ns()}")
    res = runner.invoke(app, ["reproduce", "diabetes_repro@champion", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["status"] == "identical" and report["max_difference"] <= 1e-9


def test_a_deleted_snapshot_is_reported_clearly(versions):
    from retrainer.steps import provenance
    from retrainer.stores import storage

    v2 = versions[1]
    snapshot = client().get_model_version(MODEL, v2).tags[provenance.TAG_DATA_SNAPSHOT]
    storage.remove(snapshot)
    res = runner.invoke(app, ["reproduce", f"{MODEL}/{v2}"])
    assert res.exit_code == 2, res.output
    assert f"{MODEL} v{v2}: IMPOSSIBLE" in res.output
    assert "data gone" in res.output and snapshot in res.output
    assert "no longer exists" in res.output and "while the model version" in res.output
    # The card says so too.
    from retrainer.steps.card import build_card

    md = build_card(spec(), v2)["markdown"]
    assert "(**deleted**)" in md


def test_retention_keeps_registered_snapshots_and_lets_others_go(versions):
    from retrainer.steps import retrain
    from retrainer.steps.snapshots import plan_retention, prune

    # A run that registered nothing (validated only): its snapshot is not protected.
    ctx = RunContext(dag_id=f"{MODEL}_retrain", run_id=f"repro-unregistered-{time.time_ns()}")
    orphan = retrain.validate_data(spec(), ctx)["snapshot_uri"]
    now = datetime.now(UTC)
    fates = {f.uri: f for f in plan_retention(spec(), now=now)}
    folder = orphan.rsplit("/", 1)[0]
    assert fates[folder].keep and "kept until" in fates[folder].why
    later = prune(spec(), now=now + timedelta(days=31))
    gone = [f for f in later if not f.keep]
    assert [f.uri for f in gone] == [folder] and not Path(orphan).exists()
    kept = [f for f in later if f.keep]
    assert {f.why for f in kept} == {f"v{v} is registered" for v in versions}
    v1_snapshot = client().get_model_version(MODEL, versions[0]).tags["retrainer.data_snapshot"]
    assert Path(v1_snapshot).exists()


def test_card_cli_in_every_format(versions, tmp_path):
    from retrainer.core.card import validate_mct

    res = runner.invoke(app, ["card", MODEL])  # the champion
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"# Model card: {MODEL} v{versions[0]}")
    out = tmp_path / "card.json"
    res = runner.invoke(app, ["card", f"{MODEL}/{versions[1]}", "-f", "json", "-o", str(out)])
    assert res.exit_code == 0, res.output
    validate_mct(json.loads(out.read_text()))
    res = runner.invoke(app, ["card", f"{MODEL}@challenger", "-f", "hf"])
    assert res.exit_code == 0 and res.output.startswith("---\n") and "model-index" in res.output
    res = runner.invoke(app, ["card", f"{MODEL}/99"])
    assert res.exit_code == 1 and "has no version '99'" in res.output


def test_promotion_rewrites_both_cards(versions):
    from retrainer.steps.deploy import promote

    v1, v2 = versions
    ctx = RunContext(dag_id=f"{MODEL}_deploy", run_id=f"repro-deploy-{time.time_ns()}")
    moved = promote(spec(), ctx, version=v2, reason="card test", origin="retrain")
    assert moved["action"] == "promote"
    new = client().get_model_version(MODEL, v2).description
    old = client().get_model_version(MODEL, v1).description
    assert "- **Status**: champion" in new.replace("challenger, ", "")
    assert f"| promote | {v1} | {v2} |" in new and f"| promote | {v1} | {v2} |" in old
    assert "- **Status**: previous" in old
