"""`retrainer copy-models --from URL`: the copies' `retrainer.copied_from` tags name the source
without its password, a rerun still skips what was copied, and a tag an earlier copy wrote
with the password in clear is recognised and rewritten without it."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.tracking._model_registry import utils as registry_utils

from retrainer.platform.migrate import TAG_COPIED_FROM, copy_models

SECRET = "pg-s3cret"
SOURCE = f"postgresql+psycopg2://u:{SECRET}@db.internal/mlflow"  # what the user passes


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """Two SQLite stores; SOURCE (a database URL with a password) reaches the first one."""
    monkeypatch.chdir(tmp_path)  # MLflow's default store (./mlflow.db), if anything used it
    src_uri, dst_uri = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    src = MlflowClient(src_uri, src_uri)
    exp = src.create_experiment("retrainer/m", artifact_location=(tmp_path / "src").as_uri())
    run = src.create_run(exp)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    src.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
    src.set_terminated(run.info.run_id)
    src.create_registered_model("m")
    src.create_model_version("m", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    dst = MlflowClient(dst_uri, dst_uri)

    real_client, real_download = mlflow.tracking.MlflowClient, mlflow.artifacts.download_artifacts

    def resolve(uri: str | None) -> str | None:
        return src_uri if uri == SOURCE else uri

    monkeypatch.setattr(
        mlflow.tracking,
        "MlflowClient",
        lambda uri, reg=None: real_client(resolve(uri), resolve(reg)),
    )
    monkeypatch.setattr(
        mlflow.artifacts,
        "download_artifacts",
        lambda **kw: real_download(
            **{**kw, **{k: resolve(kw[k]) for k in ("tracking_uri", "registry_uri") if k in kw}}
        ),
    )
    # What `retrainer copy-models` does before copying (mlflow_client(settings)): the process's
    # registry is the target.
    monkeypatch.setattr(registry_utils, "_registry_uri", dst_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", dst_uri)
    return dst, (tmp_path / "dst").as_uri()


def tags(dst: MlflowClient) -> list[str]:
    [version] = dst.search_model_versions("name = 'm'")
    return [version.tags[TAG_COPIED_FROM], dst.get_run(version.run_id).data.tags[TAG_COPIED_FROM]]


def test_the_copied_from_tags_hide_the_source_password_and_a_rerun_skips(stores):
    dst, root = stores
    [first] = copy_models(SOURCE, dst, artifact_root=root)
    assert not first.skipped
    version_tag, run_tag = tags(dst)
    assert version_tag == "postgresql+psycopg2://u:***@db.internal/mlflow#m/1"
    assert run_tag.startswith("postgresql+psycopg2://u:***@db.internal/mlflow#run/")
    [again] = copy_models(SOURCE, dst, artifact_root=root)
    assert again.skipped and again.target_version == first.target_version


def test_a_copy_tagged_with_the_password_in_clear_is_recognised_and_its_tags_cleaned(stores):
    dst, root = stores
    [first] = copy_models(SOURCE, dst, artifact_root=root)
    [version] = dst.search_model_versions("name = 'm'")
    run_id = dst.get_run(version.run_id).data.tags[TAG_COPIED_FROM].rsplit("/", 1)[-1]
    # As an earlier retrainer tagged it.
    dst.set_model_version_tag("m", version.version, TAG_COPIED_FROM, f"{SOURCE}#m/1")
    dst.set_tag(version.run_id, TAG_COPIED_FROM, f"{SOURCE}#run/{run_id}")
    [again] = copy_models(SOURCE, dst, artifact_root=root)
    assert again.skipped and again.target_version == first.target_version
    assert len(dst.search_model_versions("name = 'm'")) == 1
    assert not [t for t in tags(dst) if SECRET in t]
