"""The Models page: a FastAPI app that Airflow's api-server mounts at /retrainer.

Airflow does not authenticate a plugin's routes, so every route here resolves the user through
Airflow's auth manager (the session cookie the UI sets, or a bearer token) and answers 401
without one; the models listed are those whose DAGs the user may read. The page's actions
(trigger a retrain, roll back, approve) call Airflow's own REST API from the browser, with the
user's own session: Airflow checks each against the user's permissions.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from retrainer.orchestration.plugin.page import PAGE


async def current_user(request: Request) -> Any:
    """The logged-in Airflow user, or 401 (403 for a token Airflow rejects)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    try:
        return await get_user(request, None, bearer)
    except HTTPException as exc:
        if exc.status_code == 403:  # a token that is not valid: the same as none
            raise HTTPException(401, "Not authenticated: log in to Airflow") from None
        raise


def visible_dags(user: Any, dag_ids: set[str], method: str = "GET") -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(
        get_auth_manager().filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method=method)  # type: ignore[arg-type]
    )


def create_app() -> FastAPI:
    """The page's app; the api-server builds it once at start, which also reads the models
    overview in the background (a mounted app's own start-up events never run)."""
    from retrainer.orchestration.plugin.data import warm_up

    app = FastAPI(title="retrainer: Models", docs_url=None, redoc_url=None, openapi_url=None)
    warm_up()

    @app.get("/models", response_class=HTMLResponse)
    async def models_page(user: Any = Depends(current_user)) -> str:
        return PAGE

    @app.get("/api/models")
    def models_data(user: Any = Depends(current_user), model: str | None = None) -> dict[str, Any]:
        from retrainer.config.settings import get_settings
        from retrainer.orchestration.plugin.data import dag_ids, load_specs, model_rows

        settings = get_settings()
        specs, _ = load_specs(settings.models_dir)
        wanted = {d for s in specs for d in dag_ids(s).values()}
        readable = visible_dags(user, wanted)
        data = model_rows(readable, settings, only=model)
        can_run = visible_dags(user, readable, "PUT")
        for row in data["models"]:
            row["can_act"] = bool(can_run & set(row["dags"].values()))
        data["user"] = str(getattr(user, "get_name", lambda: "")() or "")
        return data

    return app
