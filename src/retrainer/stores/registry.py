"""MLflow Model Registry: versions, aliases and tags, with idempotent registration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retrainer.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, TAG_DAG_RUN_ID

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    created: bool  # False when this DAG run had registered it already (a cleared, re-run task)
    champion: bool  # True when this version is (now) the champion
    aliases: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "champion": self.champion,
            "aliases": self.aliases,
        }


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def versions_for_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    return list(client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))


def registered_by_run(client: MlflowClient, name: str) -> dict[str, list[int]]:
    """Every version of `name`, by the run it was registered from (one paged search)."""
    by_run: dict[str, list[int]] = {}
    token = None
    while True:
        page = client.search_model_versions(
            f"name = '{name}'", max_results=10_000, page_token=token
        )
        for mv in page:
            by_run.setdefault(mv.run_id or "", []).append(int(mv.version))
        token = page.token
        if not token:
            return {run: sorted(versions) for run, versions in by_run.items()}


def ensure_registered_model(client: MlflowClient, name: str, description: str = "") -> None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_registered_model(name)
        if description and not found.description:  # created earlier by a decision's summary
            client.update_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(
                name, description=description, tags={"managed_by": "retrainer"}
            )
        except MlflowException as race:  # created meanwhile by another run: fine
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def register_candidate(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    tags: dict[str, str],
    description: str = "",
) -> Registration:
    """One version per MLflow run (hence per DAG run): a re-run finds and returns it."""
    import mlflow

    existing = versions_for_run(client, name, run_id)
    created = not existing
    if existing:
        mv = max(existing, key=lambda v: int(v.version))
    else:
        ensure_registered_model(client, name, description)
        mv = mlflow.register_model(model_uri, name, tags=tags)
    version = str(mv.version)
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, version)
    champion = version_by_alias(client, name, ALIAS_CHAMPION)
    if champion is None:
        # The first model ever is also the champion, so there is always one to compare with.
        client.set_registered_model_alias(name, ALIAS_CHAMPION, version)
        is_champion = True
    else:
        is_champion = str(champion.version) == version
    aliases = [ALIAS_CHALLENGER] + ([ALIAS_CHAMPION] if is_champion else [])
    return Registration(name, version, created, is_champion, aliases)


def describe_version(mv: ModelVersion) -> dict[str, Any]:
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "aliases": list(getattr(mv, "aliases", []) or []),
        "dag_run_id": (mv.tags or {}).get(TAG_DAG_RUN_ID),
        "tags": dict(mv.tags or {}),
        "created": mv.creation_timestamp,
    }
