"""Carry registered models from one MLflow store to another (embedded → production).

For every version of every registered model (or the ones named): the version's training run is
recreated in the target (params, metrics, tags, and every run artifact: validation report, gate
decision, smoke rows, reference profile), the model files are copied under it, a new version is
registered from them with the source version's tags, and the aliases (champion, challenger,
previous) are set to the matching new versions. Versions already copied (tag
`retrainer.copied_from`) are skipped, so a rerun after an interruption finishes the job.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrainer import constants as C

if TYPE_CHECKING:
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
        existing = {
            mv.tags.get(TAG_COPIED_FROM): str(mv.version)
            for mv in dst.search_model_versions(f"name = '{rm.name}'")
            if mv.tags.get(TAG_COPIED_FROM)
        }
        mapping: dict[str, str] = {}
        versions = sorted(
            src.search_model_versions(f"name = '{rm.name}'"), key=lambda v: int(v.version)
        )
        for mv in versions:
            origin = f"{source_uri}#{rm.name}/{mv.version}"
            if origin in existing:
                mapping[str(mv.version)] = existing[origin]
                done.append(Copied(rm.name, str(mv.version), existing[origin], skipped=True))
                continue
            run = src.get_run(str(mv.run_id))
            exp_name = src.get_experiment(run.info.experiment_id).name
            location = f"{artifact_root}/{exp_name.rsplit('/', 1)[-1]}" if artifact_root else None
            exp_id = experiment_id(dst, exp_name, location)
            tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
            tags[TAG_COPIED_FROM] = f"{source_uri}#run/{run.info.run_id}"
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
                model_files = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{rm.name}/{mv.version}",
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
