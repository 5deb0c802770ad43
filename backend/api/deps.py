"""Typed dependencies of the API routes: the app state and the caller's token.

Tokens are scoped by audience and scope (``backend.config.TokenSpec``): a fire brigade's token
sees only the alerts sent to ``fire/{its district}``, a property company's only those sent to
``property/{its organisation}``. Tokens are kept as SHA-256 digests and compared in constant
time. With no tokens configured at all every caller is admin: ``anju backend run`` allows that
only on a loopback address (``backend.config.check_api_access``; issue 13). Tokens come in the
``Authorization: Bearer`` header; ``?access_token=`` only on the live stream (EventSource).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from anju.contract import FIRE_KINDS, Audience
from anju.registry import CityIndex
from backend.config import TokenSpec
from backend.metrics import BackendMetrics
from backend.store import AlertStore

if TYPE_CHECKING:
    from backend.delivery import LiveHub
    from backend.desk import AlertDesk
    from backend.requests import AlertActions
    from backend.webhooks import Webhooks


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    audience: str  # an Audience value, or "admin"
    scope: str | None
    can_resolve: bool

    @property
    def admin(self) -> bool:
        return self.audience == "admin"

    def sees(self, payload: dict[str, Any]) -> bool:
        return self.admin or any(
            a["audience"] == self.audience and a["scope"] == self.scope
            for a in payload.get("audiences", [])
        )


ADMIN = Principal("admin", "admin", None, True)


@dataclass(frozen=True, slots=True)
class Tokens:
    by_digest: dict[str, Principal]

    @classmethod
    def of(cls, specs: list[TokenSpec], api_token: str | None = None) -> Tokens:
        out = {
            s.digest(): Principal(s.name, s.audience, s.scope, s.resolve or s.audience == "admin")
            for s in specs
        }
        if api_token:
            out[hashlib.sha256(api_token.encode()).hexdigest()] = ADMIN
        return cls(out)

    def find(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, who in self.by_digest.items():
            if hmac.compare_digest(known, digest):
                return who
        return None


async def _ready() -> str | None:
    return None


@dataclass(slots=True)
class AppState:
    """What the routes need; built by the service, not at import."""

    store: AlertStore
    metrics: BackendMetrics
    api_token: str | None
    mqtt_connected: bool = False
    # The alarm lane's own MQTT session (events in, alerts out), read from its thread's state.
    alarm_connected: Callable[[], bool] = lambda: True
    # Why the backend is not ready beyond its main pool and session (the alarm lane's session
    # and pool, the worker group's lock connection), or None: ``/readyz``.
    not_ready: Callable[[], Awaitable[str | None]] = _ready
    tokens: Tokens = field(default_factory=lambda: Tokens({}))
    desk: AlertDesk | None = None
    # acknowledge/resolve: by the desk, or by the owner of the alert's partition (several
    # active workers: backend.requests)
    actions: AlertActions | None = None
    live: LiveHub | None = None
    webhooks: Webhooks | None = None
    city: CityIndex | None = None  # for telemetry scopes: which community a device is in


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.anju
    return state


StateDep = Annotated[AppState, Depends(_state)]


# Declared in the OpenAPI document (HTTP bearer), so that /docs can authorise.
_bearer = HTTPBearer(auto_error=False, description="an API token (docs/operations.md)")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _who(state: AppState, token: str | None) -> Principal:
    if not state.tokens.by_digest:
        return ADMIN
    who = state.tokens.find(token) if token else None
    if who is None:
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
    return who


def _principal(state: StateDep, bearer: BearerDep) -> Principal:
    return _who(state, bearer.credentials if bearer else None)


def _stream_principal(
    state: StateDep,
    bearer: BearerDep,
    access_token: Annotated[str | None, Query(description="for EventSource clients")] = None,
) -> Principal:
    """The live stream's caller: the bearer header, or ``?access_token=`` (EventSource cannot
    send headers). No other route reads a token from the query (it ends up in logs)."""
    return _who(state, bearer.credentials if bearer else access_token)


PrincipalDep = Annotated[Principal, Depends(_principal)]
StreamPrincipalDep = Annotated[Principal, Depends(_stream_principal)]

# The device kinds each department watches (status, telemetry and events are limited to them);
# audiences not listed see every kind of their scope.
AUDIENCE_KINDS: dict[str, frozenset[str]] = {
    Audience.FIRE: FIRE_KINDS,
    Audience.MARKET_SUPERVISION: frozenset({"elevator"}),
    Audience.PUBLIC_SECURITY: frozenset(
        {"camera", "access_controller", "emergency_button", "perimeter"}
    ),
}


def kinds_of(who: Principal) -> frozenset[str] | None:
    """The device kinds ``who`` watches; None for all."""
    return None if who.admin else AUDIENCE_KINDS.get(who.audience)


def _admin(who: PrincipalDep) -> Principal:
    if not who.admin:
        raise HTTPException(403, "admin only")
    return who


AdminDep = Annotated[Principal, Depends(_admin)]
AuthDep = Depends(_principal)
