"""What every route reads from the app: the serving state."""

from __future__ import annotations

from fastapi import Request

from retrainer.serving.state import ServingState


def state_of(request: Request) -> ServingState:
    state: ServingState = request.app.state.serving
    return state
