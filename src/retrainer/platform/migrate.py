"""Carry registered models from one MLflow store to another (embedded → production).

For every version of every registered model (or the ones named): the version's training run is
recreated in the target (params, metrics, tags, and every run artifact: validation report, gate
decision, smoke rows, reference profile), the model files are copied under it, a new version is
registered from them with the source version's tags, and the aliases (champion, challenger,
previous) are set to the matching new versions. Versions already copied (tag
`retrainer.copied_from`) are skipped, so a rerun after an interruption finishes the job. The tag
names the source with its password hidden; a tag an earlier copy wrote with the password in
clear is still recognised, and rewritten without it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrainer import constants as C
from retrainer.config.resources import redact_url

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
TAG_COPIED_FROM = "retrainer.copied_from"


@dataclass(frozen=True)
class Copied:
    name: str
    source_version: str
    target_version: str
    skipped: bool = False


def copy_models(
    source_uri: str,
    dst: MlflowClient,
    names: list[str] | None = None,
    artifact_root: str | None = None,
) -> list[Copied]:
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from retrainer.stores.registry import ensure_registered_model
    from retrainer.stores.tracking import experiment_id

    src = MlflowClient(source_uri, source_uri)
    done: list[Copied] = []
    for rm in src.search_registered_models():
        if names and rm.name not in names:
            continue
        ensure_registered_model(dst, rm.name, rm.description or "")
        existing: dict[str, str] = {}  # what each copied version came from -> its version
        for copy in dst.search_model_versions(f"name = '{rm.name}'"):
            if tag := copy.tags.get(TAG_COPIED_FROM):
                hide_tag_password(dst, copy, tag)
                existing[copied_from(tag)] = str(copy.version)
        mapping: dict[str, str] = {}
        versions = sorted(
            src.search_model_versions(f"name = '{rm.name}'"), key=lambda v: int(v.version)
        )
        for mv in versions:
            origin = copied_from(f"{source_uri}#{rm.name}/{mv.version}")
            if origin in existing:
                mapping[str(mv.version)] = existing[origin]
                done.append(Copied(rm.name, str(mv.version), existing[origin], skipped=True))
                continue
            run = src.get_run(str(mv.run_id))
            exp_name = src.get_experiment(run.info.experiment_id).name
            location = f"{artifact_root}/{exp_name.rsplit('/', 1)[-1]}" if artifact_root else None
            exp_id = experiment_id(dst, exp_name, location)
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            tags[TAG_COPIED_FROM] = copied_from(f"{source_uri}#run/{run.info.run_id}")
            new_run = dst.create_run(exp_id, run_name=run.info.run_name, tags=tags)
            rid = new_run.info.run_id
            dst.log_batch(
                rid,
                metrics=[Metric(k, v, run.info.start_time, 0) for k, v in run.data.metrics.items()],
                params=[Param(k, v) for k, v in run.data.params.items()],
                tags=[RunTag("mlflow.runName", run.info.run_name or "")],
            )
            with tempfile.TemporaryDirectory() as tmp:
                run_files = mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id,
                    artifact_path="",
                    dst_path=f"{tmp}/run",
                    tracking_uri=source_uri,
                )
                dst.log_artifacts(rid, run_files)
                # Where the source keeps the version's files, asked of the source: MLflow looks
                # a models:/ URI up in the process's registry, which `retrainer copy-models`
                # points at the target.
                model_files = mlflow.artifacts.download_artifacts(
                    artifact_uri=src.get_model_version_download_uri(rm.name, str(mv.version)),
                    dst_path=f"{tmp}/model",
                    tracking_uri=source_uri,
                )
                dst.log_artifacts(rid, model_files, C.MODEL_ARTIFACT_NAME)
            dst.set_terminated(rid, status=run.info.status)
            new = dst.create_model_version(
                rm.name,
                source=f"runs:/{rid}/{C.MODEL_ARTIFACT_NAME}",
                run_id=rid,
                tags={**mv.tags, TAG_COPIED_FROM: origin},
                description=mv.description,
            )
            mapping[str(mv.version)] = str(new.version)
            done.append(Copied(rm.name, str(mv.version), str(new.version)))
            log.info("copied %s v%s -> v%s", rm.name, mv.version, new.version)
        for alias, version in (rm.aliases or {}).items():
            if str(version) in mapping:
                dst.set_registered_model_alias(rm.name, alias, mapping[str(version)])
    return done


def copied_from(origin: str) -> str:
    """The `retrainer.copied_from` tag for `origin` (`<source URI>#<what>`): the source's
    password hidden. The same for a tag written with the password and for one written without,
    so the two compare equal."""
    return redact_url(origin)


def hide_tag_password(dst: MlflowClient, mv: ModelVersion, tag: str) -> None:
    """Rewrite a copied version's tag (and its run's) that an earlier copy wrote with the
    source's password in clear."""
    if copied_from(tag) == tag:
        return
    dst.set_model_version_tag(mv.name, str(mv.version), TAG_COPIED_FROM, copied_from(tag))
    if mv.run_id:
        run_tag = dst.get_run(mv.run_id).data.tags.get(TAG_COPIED_FROM)
        if run_tag and copied_from(run_tag) != run_tag:
            dst.set_tag(mv.run_id, TAG_COPIED_FROM, copied_from(run_tag))
    log.info(
        "hid the source password in the %s tag of %s v%s", TAG_COPIED_FROM, mv.name, mv.version
    )
