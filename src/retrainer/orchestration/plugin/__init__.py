"""retrainer's Airflow plugin: task links to MLflow, and the Models page (nav entry, and a tab on
every DAG) served by a FastAPI app mounted in the api-server.

Imported by Airflow's plugin manager in every Airflow process (scheduler, dag-processor, task
runners too), so this module stays light: the FastAPI app and MLflow are loaded only by the
api-server, when it asks for `fastapi_apps`.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from retrainer.orchestration.plugin.links import LINKS

PREFIX = "/retrainer"

MODELS_VIEW = {
    "name": "Models",
    "href": f"{PREFIX}/models",
    "url_route": "retrainer-models",
    "destination": "nav",
    "category": "browse",
}
DAG_TAB = {
    "name": "Model",
    "href": f"{PREFIX}/models?dag={{DAG_ID}}",
    "url_route": "retrainer-model",
    "destination": "dag",
}


class _LazyApps(list[dict[str, Any]]):
    """The FastAPI app, built the first time the api-server reads it: every task process
    loads plugins too (for macros), and should not pay for FastAPI and the page."""

    def _build(self) -> None:
        if not super().__len__():
            from retrainer.orchestration.plugin.app import create_app

            self.append({"app": create_app(), "url_prefix": PREFIX, "name": "retrainer models"})

    def __iter__(self) -> Any:
        self._build()
        return super().__iter__()

    def __len__(self) -> int:
        self._build()
        return super().__len__()

    def __getitem__(self, index: Any) -> Any:
        self._build()
        return super().__getitem__(index)


class RetrainerPlugin(AirflowPlugin):
    name = "retrainer"
    global_operator_extra_links = LINKS
    fastapi_apps = _LazyApps()
    external_views = [MODELS_VIEW, DAG_TAB]
