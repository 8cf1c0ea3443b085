"""The Models page: a FastAPI app that Airflow's api-server mounts at /retrainer.

Airflow does not authenticate a plugin's routes, so every route here resolves the user through
Airflow's auth manager (the session cookie the UI sets, or a bearer token) and answers 401
without one; the models listed are those whose DAGs the user may read. The page's actions
(trigger a retrain, roll back, approve) call Airflow's own REST API from the browser, with the
user's own session: Airflow checks each against the user's permissions. In multi-team mode a
team's models (spec `access_control.team`) are listed only for the team's users and admins, and
so are the names of its broken spec files.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from retrainer.orchestration.plugin.page import PAGE

log = logging.getLogger(__name__)


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


def visible_dags(user: Any, teams: dict[str, str | None], method: str = "GET") -> set[str]:
    """The DAGs of `teams` (DAG id -> its team, as the specs declare it) that the auth manager
    lets `user` read (GET) or run (PUT). A DAG's team is its bundle's in Airflow's database
    where it was parsed already, else the spec's in multi-team mode (a team's model is never
    shown to everyone), else none (Airflow enforces no team then, so neither does the page)."""
    from collections import defaultdict

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    from retrainer.orchestration.dags import multi_team

    declared = multi_team()
    known = DagModel.get_dag_id_to_team_name_mapping(sorted(teams))
    by_team: dict[str | None, set[str]] = defaultdict(set)
    for dag_id, team in teams.items():
        by_team[known.get(dag_id) or (team if declared else None)].add(dag_id)
    manager = get_auth_manager()
    return set().union(
        *(
            manager.filter_authorized_dag_ids(
                dag_ids=dag_ids,
                user=user,
                method=method,  # type: ignore[arg-type]
                team_name=team,
            )
            for team, dag_ids in by_team.items()
        )
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
        from retrainer.orchestration.plugin.data import (
            dag_ids,
            errors_dag_of,
            load_specs,
            model_rows,
        )

        settings = get_settings()
        specs, broken = load_specs(settings.models_dir)
        teams = {d: s.team for s in specs for d in dag_ids(s).values()}
        # a broken spec is listed to whoever may read the DAG that shows its error
        teams |= {errors_dag_of(team): team for _, team in broken}
        readable = visible_dags(user, teams)
        try:
            data = model_rows(readable, settings, only=model)
        except Exception as exc:  # MLflow unreachable and nothing read before
            log.warning("Models page: the registry could not be read", exc_info=True)
            raise HTTPException(
                503,
                f"the MLflow registry could not be read ({type(exc).__name__}); try again in a "
                "minute",
            ) from None
        can_run = visible_dags(user, {d: teams[d] for d in readable}, "PUT")
        for row in data["models"]:
            row["can_act"] = bool(can_run & set(row["dags"].values()))
        data["user"] = str(getattr(user, "get_name", lambda: "")() or "")
        return data

    return app
