"""The rollout of one model (admin token): GET, PUT (start a step), DELETE (end it).

The deploy DAG drives these (README: Shadow and canary in serving); the state lives in this
process only, so after a restart GET says `mode: "none"` until the DAG puts it back.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import APIRouter, Request

from retrainer.serving.http import HTTPProblem, authorize, read_json
from retrainer.serving.model import LoadedModel
from retrainer.serving.rollout import MODES, no_rollout
from retrainer.serving.routes.deps import state_of
from retrainer.serving.state import VERSION_OR_ALIAS, ServingState

log = logging.getLogger("retrainer.serving")
router = APIRouter(include_in_schema=False)
SHAPE = (
    'expected {"challenger": version or alias, "mode": "shadow" | "canary", '
    '"fraction": 0 < f <= 1, "key": a signature column or null}'
)
FIELDS = ("challenger", "mode", "fraction", "key")


def _served(state: ServingState, request: Request, name: str) -> None:
    authorize(request, state.tokens(admin=True))
    if name not in state.model_names:
        raise HTTPProblem(
            404, f"no model {name[:100]!r} in this server; served: {state.model_names}"
        )


def status(state: ServingState, name: str) -> dict[str, Any]:
    champion = state.models.get(name)
    version = champion.version if champion is not None else None
    rollout = state.rollouts.get(name)
    return rollout.status(name, version) if rollout is not None else no_rollout(name, version)


def check_body(body: Any) -> tuple[str, str, float, str | None]:
    """The PUT body's four fields, each refused (422) with what was expected."""
    if not isinstance(body, dict):
        raise HTTPProblem(422, SHAPE)
    extra = sorted(set(body) - set(FIELDS))
    if extra:
        raise HTTPProblem(422, f"{SHAPE}; unexpected keys {extra}")
    missing = [k for k in ("challenger", "mode", "fraction") if k not in body]
    if missing:
        raise HTTPProblem(422, f"{SHAPE}; missing {missing}")
    challenger, mode, fraction, key = (body.get(k) for k in FIELDS)
    if isinstance(challenger, int) and not isinstance(challenger, bool) and challenger > 0:
        challenger = str(challenger)
    if not isinstance(challenger, str) or not VERSION_OR_ALIAS.fullmatch(challenger):
        raise HTTPProblem(422, f"{SHAPE}: challenger must be a version number or an alias name")
    if mode not in MODES:
        raise HTTPProblem(422, f"{SHAPE}: mode must be one of {list(MODES)}; found {mode!r}")
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not math.isfinite(fraction)
        or not 0 < fraction <= 1
    ):
        raise HTTPProblem(422, f"{SHAPE}: fraction must be a number in (0, 1]; found {fraction!r}")
    if key is not None and not isinstance(key, str):
        raise HTTPProblem(422, f"{SHAPE}: key must be a column name or null")
    return challenger, str(mode), float(fraction), key


def _check_key(handle: LoadedModel, key: str | None, role: str) -> None:
    if key is not None and key not in handle.column_names:
        raise HTTPProblem(
            422,
            f"key {key[:100]!r} is not a column of the {role}'s signature "
            f"(v{handle.version}: {handle.column_names}); name an entity column or send null",
        )


@router.api_route("/models/{name}/rollout", methods=["GET", "PUT", "DELETE"])
async def rollout(name: str, request: Request) -> dict[str, Any]:
    """One route for the three methods, so a 405 lists them all in its Allow header."""
    state = state_of(request)
    _served(state, request, name)
    if request.method == "PUT":
        return await put_rollout(state, name, request)
    if request.method == "DELETE":
        return delete_rollout(state, name)
    return status(state, name)


async def put_rollout(state: ServingState, name: str, request: Request) -> dict[str, Any]:
    """Load the challenger beside the champion (once) and start a new step of the rollout."""
    challenger, mode, fraction, key = check_body(
        await read_json(request, state.options.max_body_bytes, state.options.body_seconds)
    )
    champion = state.handle_for(name)
    _check_key(champion, key, "champion")
    loop = asyncio.get_running_loop()
    async with state.reload_lock:
        try:
            version = await loop.run_in_executor(None, state.resolve, name, challenger)
        except HTTPProblem:
            raise
        except Exception as exc:  # the registry down or failing: the champion serves on
            log.exception("could not resolve %s's challenger %r", name, challenger)
            raise HTTPProblem(
                503,
                f"the model registry could not resolve {challenger[:100]!r} for {name} "
                f"({type(exc).__name__}: {str(exc)[:300]}); the champion serves alone, retry later",
                {"Retry-After": "30"},
            ) from None
        current = state.rollouts.get(name)
        candidates = [current.challenger.handle] if current is not None else []
        handle = next((h for h in [*candidates, champion] if h.version == version), None)
        if handle is None:
            try:
                handle = await loop.run_in_executor(None, state.load, name, version)
            except Exception as exc:
                log.exception("could not load challenger %s v%s", name, version)
                raise HTTPProblem(
                    500,
                    f"could not load {name} v{version} as the challenger "
                    f"({type(exc).__name__}: {str(exc)[:500]}); the champion serves alone",
                ) from None
        assert handle is not None
        _check_key(handle, key, "challenger")
        rollout = state.start_rollout(handle, mode, fraction, key)
        serving = state.models.get(name)
        if serving is not None and serving is not handle:
            # shadow: scores the mirrors; both modes: the paired timings of the latency check.
            # Started now, before the first request, and off the event loop (it pickles both
            # models and spawns a process: on the loop, every request waited meanwhile).
            await asyncio.to_thread(rollout.challenger.shadow_process, serving)
    log.info("rollout of %s: %s of v%s at %g (key %s)", name, mode, version, fraction, key)
    return status(state, name)


def delete_rollout(state: ServingState, name: str) -> dict[str, Any]:
    """End the rollout: the final status, and the challenger out of traffic at once."""
    final = status(state, name)
    if state.end_rollout(name) is not None:
        log.info("rollout of %s ended: %s", name, final["stats"])
    return final
