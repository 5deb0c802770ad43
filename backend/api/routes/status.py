"""Status for the screens (read-only): who the token is, communities with their buildings,
devices and gateways, and every elevator's live state from its latest telemetry.

Scoped like the telemetry routes (``telemetry.community_visible`` / ``device_visible``): a
property token sees its own communities, a department token its district and only the device
kinds its audience watches (fire: fire kinds; market supervision: elevators; public security:
cameras, access, emergency buttons and perimeters), a maintenance company its own devices.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Query
from psycopg.types.json import Jsonb

from anju.registry import CityIndex, DeviceInfo
from backend.alerting.catalog import PARAM_DEFAULTS
from backend.alerting.lifecycle import Deadlines
from backend.api.deps import AppState, Principal, PrincipalDep, StateDep, kinds_of
from backend.api.routes.telemetry import community_visible, device_visible

router = APIRouter(prefix="/api/status", tags=["status"])

LOW_BATTERY_PCT: Final = 20.0  # ALERTS.md device.battery_low
ELEVATOR_METRICS: Final = (
    "floor",
    "direction",
    "door",
    "passenger",
    "service_mode",
    "moving",
    "in_door_zone",
    "power",
    "speed_mps",
)


def _city(state: AppState) -> CityIndex:
    if state.city is None:
        raise HTTPException(503, "the registry is not loaded")
    return state.city


def visible_devices(who: Principal, city: CityIndex) -> list[DeviceInfo]:
    """The devices ``who`` may see, in registry order."""
    kinds = kinds_of(who)
    return [
        d
        for d in city.devices.values()
        if (kinds is None or d.kind in kinds) and device_visible(who, city, d.id)
    ]


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat() if t is not None else None


@router.get("/me")
async def me(state: StateDep, who: PrincipalDep) -> dict[str, Any]:
    """The caller as the screens show it: name, audience, scope (and its name), kinds."""
    city = state.city
    scope_name = None
    if city is not None and who.scope:
        orgs = {o.id: o.name for o in city.registry.organisations}
        scope_name = city.district_names.get(who.scope) or orgs.get(who.scope)
        if scope_name is None and who.scope in city.communities:
            scope_name = city.communities[who.scope].name
    kinds = kinds_of(who)
    deadlines = state.desk.engine.shared.deadlines if state.desk is not None else Deadlines()
    return {
        "name": who.name,
        "audience": who.audience,
        "scope": who.scope,
        "scope_name": scope_name,
        "admin": who.admin,
        "can_resolve": who.can_resolve,
        "kinds": sorted(kinds) if kinds is not None else None,
        # Critical alerts not acknowledged by property within these are escalated.
        "ack_deadline_s": {
            "default": deadlines.default_ms / 1000,
            "fire": deadlines.fire_ms / 1000,
        },
    }


async def _device_rows(state: StateDep, ids: list[str]) -> dict[str, tuple[Any, ...]]:
    async with state.store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT device_id, online, fw, battery_pct, updated_at FROM device_status"
            " WHERE device_id = ANY(%s)",
            (ids,),
        )
        return {r[0]: r for r in await cur.fetchall()}


async def _offline_alerts(state: StateDep, ids: list[str]) -> set[str]:
    async with state.store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT device_id FROM alerts WHERE state <> 'resolved' AND type = 'device.offline'"
            " AND device_id = ANY(%s)",
            (ids,),
        )
        return {r[0] for r in await cur.fetchall()}


def _device_doc(
    d: DeviceInfo, row: tuple[Any, ...] | None, offline_alert: bool, gateway_online: bool | None
) -> dict[str, Any]:
    if offline_alert or gateway_online is False or (row is not None and row[1] is False):
        status = "offline"
    elif row is not None:
        status = "online"
    else:
        status = "unknown"  # never reported a status
    battery = row[3] if row is not None else None
    return {
        "id": d.id,
        "kind": d.kind,
        "community_id": d.community_id,
        "building": d.building,
        "location": d.location,
        "gateway_id": d.gateway_id,
        "status": status,
        "battery_pct": battery,
        "low_battery": battery is not None and battery < LOW_BATTERY_PCT,
        "fw": row[2] if row is not None else None,
        "last_seen": _iso(row[4]) if row is not None else None,
        # The thresholds the rules use (registry params over the catalog's defaults), for charts.
        "params": {**PARAM_DEFAULTS.get(d.kind, {}), **d.params},
    }


async def _gateways(state: StateDep, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each gateway's state (its retained ``online`` message) and last contact: the later of
    its last state message and its last committed upload. Outbox depth is not reported to the
    backend (the gateway shows it in ``anju gateway status``), so it is ``None``."""
    async with state.store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT g.id, s.online, s.boot_id, s.updated_at, u.last"
            " FROM unnest(%s::text[]) AS g(id)"
            " LEFT JOIN gateway_status s ON s.gateway_id = g.id"
            " LEFT JOIN LATERAL (SELECT max(updated_at) AS last FROM ingest_seen"
            "   WHERE gateway_id = g.id) u ON true",
            (ids,),
        )
        rows = await cur.fetchall()
    out = {}
    for gid, online, boot, changed, uploaded in rows:
        times = [t for t in (changed, uploaded) if t is not None]
        out[gid] = {
            "id": gid,
            "online": online,
            "boot_id": boot,
            "last_contact": _iso(max(times)) if times else None,
            "outbox_depth": None,
        }
    return out


def _sent_to(who: Principal) -> tuple[str, list[Any]]:
    """SQL (and its arguments) keeping the alerts sent to ``who``'s audience and scope."""
    if who.admin:
        return "", []
    return " AND payload -> 'audiences' @> %s", [
        Jsonb([{"audience": who.audience, "scope": who.scope or ""}])
    ]


async def _open_alert_counts(
    state: StateDep, who: Principal, community_ids: list[str]
) -> dict[str, int]:
    sent, args = _sent_to(who)
    async with state.store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT community_id, count(*) FROM alerts WHERE state <> 'resolved'"
            " AND community_id = ANY(%s)" + sent + " GROUP BY 1",
            [community_ids, *args],
        )
        return {r[0]: int(r[1]) for r in await cur.fetchall()}


@router.get("/communities")
async def communities(state: StateDep, who: PrincipalDep) -> list[dict[str, Any]]:
    """Each visible community with its buildings (device counts by status, low batteries), its
    gateways (online, last contact) and its number of open alerts sent to the caller."""
    city = _city(state)
    devices = visible_devices(who, city)
    by_com: dict[str, list[DeviceInfo]] = defaultdict(list)
    for d in devices:
        by_com[d.community_id].append(d)
    coms = [
        c for c in city.registry.communities if community_visible(who, city, c.id) or c.id in by_com
    ]
    gw_ids = [g.id for c in coms for g in c.gateways]
    rows = await _device_rows(state, [d.id for d in devices])
    offline = await _offline_alerts(state, [d.id for d in devices])
    gws = await _gateways(state, gw_ids)
    counts = await _open_alert_counts(state, who, [c.id for c in coms])
    orgs = {o.id: o.name for o in city.registry.organisations}
    out = []
    for c in coms:
        buildings: dict[str, dict[str, Any]] = {}
        totals = {"total": 0, "online": 0, "offline": 0, "unknown": 0, "low_battery": 0}
        for d in by_com.get(c.id, []):
            doc = _device_doc(d, rows.get(d.id), d.id in offline, gws[d.gateway_id]["online"])
            b = buildings.setdefault(
                d.building or "",
                {"id": d.building or "", "total": 0, "online": 0, "offline": 0, "unknown": 0}
                | {"low_battery": 0, "kinds": {}},
            )
            for bag in (b, totals):
                bag["total"] += 1
                bag[doc["status"]] += 1
                bag["low_battery"] += doc["low_battery"]
            b["kinds"][d.kind] = b["kinds"].get(d.kind, 0) + 1
        out.append(
            {
                "id": c.id,
                "name": c.name,
                "district": c.district,
                "district_name": city.district_names.get(c.district),
                "street": c.street,
                "property": c.property,
                "property_name": orgs.get(c.property),
                "devices": totals,
                "buildings": sorted(buildings.values(), key=lambda b: (len(b["id"]), b["id"])),
                "gateways": [gws[g.id] for g in c.gateways],
                "open_alerts": counts.get(c.id, 0),
            }
        )
    return out


@router.get("/devices")
async def devices(
    state: StateDep,
    who: PrincipalDep,
    community_id: str | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Visible devices (of one community, of one kind) with status, battery and last seen."""
    city = _city(state)
    devs = [
        d
        for d in visible_devices(who, city)
        if (community_id is None or d.community_id == community_id)
        and (kind is None or d.kind == kind)
    ]
    ids = [d.id for d in devs]
    rows = await _device_rows(state, ids)
    offline = await _offline_alerts(state, ids)
    gws = await _gateways(state, sorted({d.gateway_id for d in devs}))
    return [
        _device_doc(d, rows.get(d.id), d.id in offline, gws[d.gateway_id]["online"]) for d in devs
    ]


_ELEVATOR_LATEST = """
SELECT d.id, m.metric, l.ts, l.num, l.txt, l.flag
FROM unnest(%(ids)s::text[]) AS d(id)
CROSS JOIN unnest(%(metrics)s::text[]) AS m(metric)
CROSS JOIN LATERAL (
    SELECT r.ts, r.num, r.txt, r.flag FROM readings r
    WHERE r.device_id = d.id AND r.metric = m.metric AND r.ts >= %(since)s AND r.ts < %(until)s
    ORDER BY r.ts DESC LIMIT 1
) l
"""


@router.get("/elevators")
async def elevators(
    state: StateDep,
    who: PrincipalDep,
    community_id: str | None = None,
    lookback_h: int = Query(24, ge=1, le=24 * 31),
) -> list[dict[str, Any]]:
    """Every visible elevator's latest floor, direction, door, passenger, service mode,
    moving, door zone and power (each the newest reading within ``lookback_h``), and its
    open alerts."""
    city = _city(state)
    elevs = [
        d
        for d in visible_devices(who, city)
        if d.kind == "elevator" and (community_id is None or d.community_id == community_id)
    ]
    ids = [d.id for d in elevs]
    now = datetime.now(UTC)
    async with state.store.pool.connection() as conn:
        cur = await conn.execute(
            _ELEVATOR_LATEST,
            {
                "ids": ids,
                "metrics": list(ELEVATOR_METRICS),
                "since": now - timedelta(hours=lookback_h),
                "until": now + timedelta(days=1),
            },
        )
        latest = await cur.fetchall()
        sent, args = _sent_to(who)
        cur = await conn.execute(
            "SELECT device_id, id::text, type, severity, state FROM alerts"
            " WHERE state <> 'resolved' AND device_id = ANY(%s)" + sent + " ORDER BY raised_at",
            [ids, *args],
        )
        open_rows = await cur.fetchall()
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    stamp: dict[str, datetime] = {}
    for dev, metric, ts, num, txt, flag in latest:
        value = flag if flag is not None else num if num is not None else txt
        if metric == "floor" and isinstance(value, float) and value.is_integer():
            value = int(value)
        values[dev][metric] = value
        stamp[dev] = max(stamp.get(dev, ts), ts)
    alerts: dict[str, list[dict[str, str]]] = defaultdict(list)
    for dev, aid, typ, sev, st in open_rows:
        alerts[dev].append({"id": aid, "type": typ, "severity": sev, "state": st})
    return [
        {
            "device_id": d.id,
            "community_id": d.community_id,
            "community_name": d.community_name,
            "building": d.building,
            "location": d.location,
            "floors": d.params.get("floors"),
            "lowest_floor": d.params.get("lowest_floor", 1),
            **{m: values[d.id].get(m) for m in ELEVATOR_METRICS},
            "ts": _iso(stamp.get(d.id)),
            "open_alerts": alerts.get(d.id, []),
        }
        for d in elevs
    ]
