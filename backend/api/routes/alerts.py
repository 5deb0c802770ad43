"""Alerts: list, one alert with its audit entries, acknowledge, resolve, the audit chain.

Every route sees only what the caller's token may see (``deps.Principal``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from anju.contract import Audience
from backend.alerting.errors import AlertNotFound, NotAnAudience
from backend.alerting.resolvers import may_resolve
from backend.api.deps import AdminDep, Principal, PrincipalDep, StateDep
from backend.audit_anchor import AnchorFileError
from backend.requests import NotAnswered

router = APIRouter(prefix="/api/alerts", tags=["alerts"])


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(
        "", max_length=100, description="the person acknowledging (recorded with the token's name)"
    )
    note: str = Field("", max_length=1000)
    audience: Audience | None = Field(None, description="admin only: on behalf of")


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field("", max_length=100)
    note: str = Field("", max_length=1000)


def _actor(who: Principal, person: str) -> str:
    """Who did it, as recorded: the token's principal, with the person it names if any."""
    person = person.strip()
    return f"{person} ({who.name})" if person else who.name


@router.get("")
async def list_alerts(
    state: StateDep,
    who: PrincipalDep,
    open_only: bool = False,
    community_id: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Alerts the caller may see, newest first, as the payload of PROTOCOL.md section 2."""
    aud = None if who.admin else (who.audience, who.scope or "")
    return await state.store.list_alerts(
        open_only=open_only, community_id=community_id, limit=limit, audience=aud
    )


@router.get("/audit/verify")
async def verify_audit(
    state: StateDep, who: AdminDep, limit: int = Query(10_000, ge=1, le=1_000_000)
) -> dict[str, Any]:
    """Verify the audit log (admin): every entry's hash and link, every alert row against its
    last entry, the chain against the backend's anchor file. ``broken`` lists every problem
    (up to ``limit``; ``broken_count`` counts them all), ``first_bad`` the first entry."""
    try:
        r = await state.store.verify_audit()
    except AnchorFileError as exc:
        raise HTTPException(500, f"the audit anchor file cannot be read: {exc}") from exc
    return r.to_json(limit)


async def _visible(state: StateDep, who: PrincipalDep, alert_id: UUID) -> dict[str, Any]:
    payload = await state.store.get_alert(str(alert_id))
    if payload is None or not who.sees(payload):
        raise HTTPException(404, f"no alert {alert_id} for {who.name}")
    return payload


@router.get("/{alert_id}")
async def get_alert(state: StateDep, who: PrincipalDep, alert_id: UUID) -> dict[str, Any]:
    return await _visible(state, who, alert_id)


@router.get("/{alert_id}/audit")
async def alert_audit(state: StateDep, who: PrincipalDep, alert_id: UUID) -> list[dict[str, Any]]:
    """Every change of the alert, with the hash chain's entries."""
    await _visible(state, who, alert_id)
    return await state.store.audit_of(str(alert_id))


@router.post("/{alert_id}/ack")
async def acknowledge(
    state: StateDep, who: PrincipalDep, alert_id: UUID, body: AckBody
) -> dict[str, Any]:
    """Acknowledge for the caller's audience (each audience acknowledges on its own), recorded
    as the token's principal (``by`` names the person at the screen, if given)."""
    payload = await _visible(state, who, alert_id)
    if who.admin:
        if body.audience is None:
            raise HTTPException(
                422,
                "admin acknowledges on behalf of an audience: give one of "
                + ", ".join(a["audience"] for a in payload.get("audiences", [])),
            )
        audience = body.audience
    else:
        audience = Audience(who.audience)
    assert state.actions is not None
    try:
        changed = await state.actions.acknowledge(
            str(alert_id),
            audience,
            by=_actor(who, body.by),
            note=body.note,
            community=payload.get("community_id"),
        )
    except AlertNotFound as exc:
        raise HTTPException(409, str(exc)) from exc
    except NotAnAudience as exc:
        raise HTTPException(403, str(exc)) from exc
    except NotAnswered as exc:
        raise HTTPException(503, str(exc), {"Retry-After": "2"}) from exc
    return changed if changed else await _visible(state, who, alert_id)


@router.post("/{alert_id}/resolve")
async def resolve(
    state: StateDep, who: PrincipalDep, alert_id: UUID, body: ResolveBody
) -> dict[str, Any]:
    """Resolve by a person: admin, or a token with ``resolve: true`` whose audience may resolve
    that type (``backend.alerting.resolvers``: a property company does not resolve a fire
    alarm sent to the fire brigade)."""
    payload = await _visible(state, who, alert_id)
    if not who.can_resolve:
        raise HTTPException(403, f"{who.name} may not resolve alerts")
    if not may_resolve(str(payload.get("type", "")), who.audience):
        raise HTTPException(403, f"{who.name} may not resolve {payload.get('type')} alerts")
    assert state.actions is not None
    try:
        return await state.actions.resolve(
            str(alert_id),
            by=_actor(who, body.by),
            note=body.note,
            community=payload.get("community_id"),
        )
    except AlertNotFound as exc:
        raise HTTPException(409, str(exc)) from exc
    except NotAnswered as exc:
        raise HTTPException(503, str(exc), {"Retry-After": "2"}) from exc
