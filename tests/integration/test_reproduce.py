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
ROOT = Path(__file__).resolve().parents[2]
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


def test_pruning_deletes_only_its_own_run_folders_and_never_on_a_registry_error(
    versions, tmp_path, monkeypatch
):
    """The snapshot tag is an ordinary run tag anyone who may edit the run can change: pointed
    at another folder (or at `s3://bucket/x`, whose parent is the bucket) it was deleted; and
    any registry error (MLflow down, no permission on the model) read as 'the version was
    deleted', so every registered version's snapshot went."""
    from mlflow.exceptions import MlflowException

    from retrainer.steps import provenance, retrain
    from retrainer.steps import snapshots as snap

    victim = tmp_path / "someone-elses" / "data.parquet"
    victim.parent.mkdir()
    victim.write_text("precious")
    ctx = RunContext(dag_id=f"{MODEL}_retrain", run_id=f"repro-hostile-{time.time_ns()}")
    run_id = retrain.validate_data(spec(), ctx)["mlflow_run_id"]
    client().set_tag(run_id, provenance.TAG_DATA_SNAPSHOT, str(victim))
    later = datetime.now(UTC) + timedelta(days=365)
    fates = {f.uri: f for f in snap.prune(spec(), now=later)}
    assert fates[str(victim.parent)].keep and "left alone" in fates[str(victim.parent)].why
    assert victim.exists()

    def denied(*args, **kwargs):
        raise MlflowException("no permission", error_code="PERMISSION_DENIED")

    monkeypatch.setattr("retrainer.stores.registry.registered_by_run", denied)
    fates = snap.prune(spec(), now=later)
    assert fates and all(f.keep for f in fates)
    assert any(f.why.startswith("the registry could not be asked (") for f in fates)
    v1 = client().get_model_version(MODEL, versions[0])  # (v2's was removed by an earlier test)
    assert Path(v1.tags["retrainer.data_snapshot"]).exists()


def test_a_run_run_again_trains_on_the_data_it_took_not_on_a_grown_folder(versions, tmp_path):
    """Clearing a finished retrain run re-ran validate_data on the source folder, which had
    grown: it overwrote the snapshot a registered version was trained on (reproduce then said
    IMPOSSIBLE) and train_candidate failed for good on params MLflow will not change."""
    import shutil

    from retrainer.steps import retrain

    batches = tmp_path / "batches"
    batches.mkdir()
    base = ROOT / "examples" / "credit" / "batches" / "base.csv"
    shutil.copy(base, batches / "first.csv")
    ctx = RunContext(dag_id=f"{MODEL}_retrain", run_id=f"repro-again-{time.time_ns()}")
    taken = retrain.validate_data(spec(), ctx, data_uri=str(batches))
    trained = retrain.train_candidate(spec(), ctx, taken)
    shutil.copy(base, batches / "second.csv")  # a batch lands; the run is cleared, runs again
    again = retrain.validate_data(spec(), ctx, data_uri=str(batches))
    assert again["snapshot_uri"] == taken["snapshot_uri"] and again["rows"] == taken["rows"]
    assert (
        client().get_run(taken["mlflow_run_id"]).data.tags["retrainer.data_digest"]
        == (client().get_run(again["mlflow_run_id"]).data.tags["retrainer.data_digest"])
    )
    assert retrain.train_candidate(spec(), ctx, again)["mlflow_run_id"] == trained["mlflow_run_id"]


def test_a_file_removed_while_a_folder_is_read_is_a_retry_not_a_failure(tmp_path, monkeypatch):
    from retrainer.errors import TransientError
    from retrainer.stores import storage

    (tmp_path / "a.csv").write_text("x\n1\n")
    listed = storage.list_data_files
    monkeypatch.setattr(
        storage, "list_data_files", lambda uri: [*listed(uri), str(tmp_path / "b.csv")]
    )
    with pytest.raises(TransientError, match="b.csv was removed while"):
        storage.read_table(str(tmp_path))


def test_an_empty_s3_key_is_never_removed():
    from retrainer.stores import storage

    with pytest.raises(ValueError, match="whole bucket"):
        storage.remove("s3://shared-bucket/")


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
