"""Typed dependencies of the API routes: the app state and the caller's token.

Tokens are scoped by audience and scope (``backend.config.TokenSpec``): a fire brigade's token
sees only the alerts sent to ``fire/{its district}``, a property company's only those sent to
``property/{its organisation}``. Tokens are kept as SHA-256 digests and compared in constant
time. With no tokens configured at all (development, ``anju demo``) every caller is admin.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Header, HTTPException, Query, Request

from anju.registry import CityIndex
from backend.config import TokenSpec
from backend.metrics import BackendMetrics
from backend.store import AlertStore

if TYPE_CHECKING:
    from backend.alerting.desk import AlertDesk
    from backend.delivery import LiveHub
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


@dataclass(slots=True)
class AppState:
    """What the routes need; built by the service, not at import."""

    store: AlertStore
    metrics: BackendMetrics
    api_token: str | None
    mqtt_connected: bool = False
    tokens: Tokens = field(default_factory=lambda: Tokens({}))
    desk: AlertDesk | None = None
    live: LiveHub | None = None
    webhooks: Webhooks | None = None
    city: CityIndex | None = None  # for telemetry scopes: which community a device is in


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.anju
    return state


StateDep = Annotated[AppState, Depends(_state)]


def _principal(
    state: StateDep,
    authorization: Annotated[str | None, Header()] = None,
    access_token: Annotated[str | None, Query(description="for EventSource clients")] = None,
) -> Principal:
    if not state.tokens.by_digest:
        return ADMIN
    token = None
    if authorization is not None and authorization.startswith("Bearer "):
        token = authorization[len("Bearer ") :]
    token = token or access_token
    who = state.tokens.find(token) if token else None
    if who is None:
        raise HTTPException(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})
    return who


PrincipalDep = Annotated[Principal, Depends(_principal)]


def _admin(who: PrincipalDep) -> Principal:
    if not who.admin:
        raise HTTPException(403, "admin only")
    return who


AdminDep = Annotated[Principal, Depends(_admin)]
AuthDep = Depends(_principal)
