"""Telemetry: latest state of a community, a device's metric in time buckets, events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi import APIRouter, HTTPException, Query

from anju.contract import Audience
from anju.registry import CityIndex
from backend import queries
from backend.api.deps import AppState, Principal, PrincipalDep, StateDep, kinds_of

router = APIRouter(prefix="/api/telemetry", tags=["telemetry"])

_DEPARTMENTS = frozenset(
    {Audience.FIRE, Audience.MARKET_SUPERVISION, Audience.PUBLIC_SECURITY, Audience.CONSTRUCTION}
)


def _city(state: AppState) -> CityIndex:
    if state.city is None:
        raise HTTPException(503, "the registry is not loaded")
    return state.city


def community_visible(who: Principal, city: CityIndex, community_id: str) -> bool:
    """Departments see their district, a property company its communities, a residents'
    committee its own community; a maintenance company sees devices, not communities."""
    com = city.communities.get(community_id)
    if com is None:
        return who.admin
    if who.admin:
        return True
    if who.audience in _DEPARTMENTS:
        return who.scope == com.district
    if who.audience == Audience.PROPERTY:
        return who.scope == com.property
    if who.audience == Audience.COMMUNITY:
        return who.scope == com.id
    return False


def kind_visible(who: Principal, city: CityIndex, device_id: str) -> bool:
    """The device is of a kind ``who`` watches (``deps.AUDIENCE_KINDS``: a fire brigade reads
    fire kinds, not access control or cameras)."""
    kinds = kinds_of(who)
    dev = city.devices.get(device_id)
    return kinds is None or (dev is not None and dev.kind in kinds)


def device_visible(who: Principal, city: CityIndex, device_id: str) -> bool:
    dev = city.devices.get(device_id)
    if dev is None:
        return who.admin
    if who.audience == Audience.MAINTENANCE:
        return who.scope is not None and who.scope == dev.maintenance_org
    return community_visible(who, city, dev.community_id)


def _forbid() -> HTTPException:
    # 404, not 403: whether another company's community or device exists is not for us to say.
    return HTTPException(404, "no such community or device in your scope")


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@router.get("/communities/{community_id}/latest")
async def latest(
    state: StateDep,
    who: PrincipalDep,
    community_id: str,
    lookback_h: int = Query(720, ge=1, le=24 * 366),
) -> list[dict[str, Any]]:
    """The newest value of every metric of every device of the community (of the kinds the
    caller watches)."""
    city = _city(state)
    if not community_visible(who, city, community_id):
        raise _forbid()
    async with state.store.pool.connection() as conn:
        rows = await queries.latest_state(conn, community_id, lookback=timedelta(hours=lookback_h))
    return [
        {
            "device_id": r.device_id,
            "metric": r.metric,
            "ts": r.ts.isoformat(),
            "value": r.flag if r.flag is not None else r.num if r.num is not None else r.txt,
        }
        for r in rows
        if kind_visible(who, city, r.device_id)
    ]


@router.get("/devices/{device_id}/metrics/{metric}")
async def series(
    state: StateDep,
    who: PrincipalDep,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket_s: int = Query(3600, ge=1, le=366 * 86400),
) -> dict[str, Any]:
    """The metric in buckets over [start, end) widened to whole buckets (UTC-aligned)."""
    city = _city(state)
    if not device_visible(who, city, device_id) or not kind_visible(who, city, device_id):
        raise _forbid()
    try:
        async with state.store.pool.connection() as conn:
            source, buckets = await queries.metric_series(
                conn, device_id, metric, _utc(start), _utc(end), timedelta(seconds=bucket_s)
            )
    except queries.QueryError as exc:
        raise HTTPException(422, str(exc)) from exc
    except (OverflowError, psycopg.DataError) as exc:  # times or buckets out of range
        raise HTTPException(422, "start, end or bucket_s out of range") from exc
    return {
        "source": source,
        "buckets": [
            {
                "start": b.start.isoformat(),
                "n": b.n,
                "avg": b.avg,
                "min": b.vmin,
                "max": b.vmax,
                "true": b.ntrue,
            }
            for b in buckets
        ],
    }


@router.get("/communities/{community_id}/events")
async def events(
    state: StateDep,
    who: PrincipalDep,
    community_id: str,
    start: datetime,
    end: datetime,
    type: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """The community's events, newest first (of the device kinds the caller watches)."""
    city = _city(state)
    if not community_visible(who, city, community_id):
        raise _forbid()
    async with state.store.pool.connection() as conn:
        rows = await queries.events_by_community(
            conn, community_id, start=_utc(start), end=_utc(end), event_type=type, limit=limit
        )
    return [
        {"ts": e.ts.isoformat(), "device_id": e.device_id, "type": e.type, "data": e.data}
        for e in rows
        if kind_visible(who, city, e.device_id)
    ]
