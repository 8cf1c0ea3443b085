"""A small client for Airflow 3's REST API (v2): log in, trigger, wait, read task states."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from retrainer.errors import AirflowAPIError

FINISHED = {"success", "failed"}


POLL_SECONDS = 0.5


class AirflowUnreachable(AirflowAPIError):
    """No answer at all (refused, timed out): it may come back."""

    permanent = False


@dataclass
class AirflowClient:
    base_url: str
    username: str
    password: str
    timeout: float = 30.0
    _token: str | None = field(default=None, repr=False)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return httpx.request(method, url, timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:  # refused, timed out, reset: a message, not a traceback
            raise AirflowUnreachable(
                f"Airflow at {self.base_url} could not be reached ({type(exc).__name__}: "
                f"{str(exc)[:200]}); is the platform up? `retrainer status` tells"
            ) from None

    def _json(self, resp: httpx.Response, what: str) -> Any:
        try:
            return resp.json() if resp.content else None
        except ValueError:
            raise AirflowAPIError(
                f"{what}: Airflow at {self.base_url} answered {resp.status_code} with something "
                f"that is not JSON ({resp.text[:120]!r}); is a proxy in the way?"
            ) from None

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            resp = self._send(
                "POST",
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
            )
            if resp.status_code not in (200, 201):
                raise AirflowAPIError(
                    f"Airflow at {self.base_url} refused the login for {self.username!r} "
                    f"({resp.status_code}: {resp.text[:200]}); check `retrainer status`"
                )
            token = self._json(resp, "login")
            if not isinstance(token, dict) or not isinstance(token.get("access_token"), str):
                raise AirflowAPIError(
                    f"login: Airflow at {self.base_url} answered without an access token"
                )
            self._token = token["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/api/v2{path}"
        resp = self._send(method, url, headers=self._headers(), **kwargs)
        if resp.status_code == 401:  # token expired: log in again once
            self._token = None
            resp = self._send(method, url, headers=self._headers(), **kwargs)
        if resp.status_code >= 400:
            raise AirflowAPIError(f"{method} {path} answered {resp.status_code}: {resp.text[:500]}")
        return self._json(resp, f"{method} {path}")

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/dags/{dag_id}")  # type: ignore[no-any-return]
        except AirflowAPIError as exc:
            if " 404:" in str(exc):
                return None
            raise

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Until the dag-processor has parsed the DAG; unpause it if needed."""
        deadline = time.monotonic() + timeout
        while True:
            dag = self.get_dag(dag_id)
            if dag is not None:
                if dag.get("is_paused"):
                    self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
                return dag
            if time.monotonic() > deadline:
                errors = self.import_errors()
                raise AirflowAPIError(
                    f"DAG {dag_id} did not appear in {timeout:.0f} s."
                    + (
                        f" Import errors: {errors}"
                        if errors
                        else " Is the spec in RETRAINER_MODELS_DIR?"
                    )
                )
            time.sleep(2)

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/importErrors").get("import_errors", []))

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)  # type: ignore[no-any-return]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")  # type: ignore[no-any-return]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(data.get("task_instances", []))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        try:
            data = self.request(
                "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
            )
        except AirflowAPIError:
            return None
        return data.get("value")

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 900.0,
        on_change: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            try:
                run = self.dag_run(dag_id, run_id)
                states = {
                    ti["task_id"]: str(ti.get("state"))
                    for ti in self.task_instances(dag_id, run_id)
                }
            except AirflowUnreachable:  # the api-server restarting: the run goes on meanwhile
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
                continue
            if states != seen and on_change:
                on_change(states)
            seen = states
            if run.get("state") in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise AirflowAPIError(
                    f"{dag_id} run {run_id} still {run.get('state')} after {timeout:.0f} s"
                )
            time.sleep(POLL_SECONDS)  # two cheap GETs; the run's end is seen within half a second
