"""Typed dependencies of the API routes."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from backend.metrics import BackendMetrics
from backend.store import AlertStore


@dataclass(slots=True)
class AppState:
    """What the routes need; built by the service, not at import."""

    store: AlertStore
    metrics: BackendMetrics
    api_token: str | None
    mqtt_connected: bool = False


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.anju
    return state


StateDep = Annotated[AppState, Depends(_state)]


def _authorised(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    if state.api_token is None:
        return
    expected = f"Bearer {state.api_token}"
    if authorization is None or not hmac.compare_digest(authorization, expected):
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})


AuthDep = Depends(_authorised)
