"""Supervision figures per property company, community or maintenance company, per local day
or month (Asia/Shanghai), read from the rollup (``backend.supervision.rollup``).

Every figure is defined in docs/supervision.md; ``FIGURES`` names them in table order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from backend.supervision.rollup import ROLLUP_LOCK, TZ


class Level(StrEnum):
    PROPERTY = "property"
    COMMUNITY = "community"
    MAINTENANCE = "maintenance"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


ELEVATOR_FAULTS: Final = (
    "elevator.fault",
    "elevator.overtravel_top",
    "elevator.overtravel_bottom",
    "elevator.door_open_moving",
    "elevator.overspeed",
    "elevator.stopped_outside_door_zone",
)

FIGURES: Final = (
    "alerts",
    "critical",
    "major",
    "minor",
    "info",
    "acked",
    "ack_median_s",
    "ack_p90_s",
    "resolve_median_s",
    "resolve_p90_s",
    "escalated",
    "overdue",
    "device_online_ratio",
    "gateway_uptime",
    "elevators",
    "trapped",
    "elevator_faults",
    "faults_per_elevator",
    "maint_ack_median_s",
    "maint_ack_p90_s",
    "fire_alarms",
    "fire_confirmed",
    "fire_false_alarms",
    "water_pressure_hours",
    "electrical_hours",
    "security_alerts",
)

_ALERT_KEY: Final = {
    Level.PROPERTY: "a.property_org",
    Level.COMMUNITY: "a.community_id",
    Level.MAINTENANCE: "a.maintenance_org",
}


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller may see: ``districts`` None for every district; ``ids`` None for every
    company or community of the level."""

    districts: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None


EVERYTHING: Final = Scope()


def _period(col: str, period: Period) -> str:
    return col if period is Period.DAY else f"date_trunc('month', {col})::date"


def _grid(level: Level) -> str:
    """Units per (key, day): devices, gateways and elevators held that day. Days are numbered
    (``generate_series`` over integers) so that the planner knows how many there are."""
    days = "(SELECT (%(start)s::date + i) AS d FROM generate_series(0, %(ndays)s - 1) i) d"
    if level is Level.MAINTENANCE:
        return (
            "SELECT m.maintenance_org AS key, d.d AS day, 0 AS devices, 0 AS gateways,"
            " m.elevators FROM sv_maintenance m JOIN sv_community c USING (community_id)"
            f" CROSS JOIN {days} WHERE {{cfilter}}"
        )
    key = "t.property_org" if level is Level.PROPERTY else "c.community_id"
    return (
        f"SELECT {key} AS key, d.d AS day, c.devices, c.gateways, c.elevators"
        " FROM sv_community c JOIN (SELECT community_id, since, property_org,"
        " lead(since, 1, 'infinity'::date) OVER (PARTITION BY community_id ORDER BY since)"
        " AS until FROM sv_tenure) t ON t.community_id = c.community_id"
        f" JOIN {days} ON d.d >= t.since AND d.d < t.until"
        " WHERE {cfilter}"
    )


def figures_sql(level: Level, period: Period, scope: Scope) -> str:
    key = _ALERT_KEY[level]
    dkey = key.replace("a.", "x.")
    afilter = [f"{key} IS NOT NULL"]
    cfilter = ["true"]
    xfilter = [f"{dkey} IS NOT NULL"]
    if scope.districts is not None:
        afilter.append("a.district = ANY(%(districts)s)")
        xfilter.append("x.district = ANY(%(districts)s)")
        cfilter.append("c.district = ANY(%(districts)s)")
    if scope.ids is not None:
        afilter.append(f"{key} = ANY(%(ids)s)")
        xfilter.append(f"{dkey} = ANY(%(ids)s)")
    grid = _grid(level).format(cfilter=" AND ".join(cfilter))
    gkey_filter = "WHERE g.key = ANY(%(ids)s)" if scope.ids is not None else ""
    faults = ", ".join(f"'{t}'" for t in ELEVATOR_FAULTS)
    return f"""
WITH grid AS ({grid}),
units AS (
    SELECT g.key, {_period("g.day", period)} AS period, count(DISTINCT g.day) AS days,
           sum(g.devices) AS device_days, sum(g.gateways) AS gateway_days,
           sum(g.elevators)::float8 / count(DISTINCT g.day) AS elevators
    FROM grid g {gkey_filter} GROUP BY 1, 2),
al AS (
    SELECT {key} AS key, {_period("a.day", period)} AS period,
      count(*) AS alerts,
      count(*) FILTER (WHERE a.severity = 'critical') AS critical,
      count(*) FILTER (WHERE a.severity = 'major') AS major,
      count(*) FILTER (WHERE a.severity = 'minor') AS minor,
      count(*) FILTER (WHERE a.severity = 'info') AS info,
      count(a.ack_property_s) AS acked,
      percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY a.ack_property_s) AS ack,
      percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY a.resolve_s) AS res,
      count(*) FILTER (WHERE a.escalated) AS escalated,
      count(*) FILTER (WHERE a.overdue) AS overdue,
      count(*) FILTER (WHERE a.type = 'elevator.trapped') AS trapped,
      count(*) FILTER (WHERE a.type IN ({faults})) AS elevator_faults,
      percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY a.ack_maintenance_s)
        AS mack,
      count(*) FILTER (WHERE a.type = 'fire.alarm') AS fire_alarms,
      count(*) FILTER (WHERE a.type = 'fire.alarm' AND a.confirmed) AS fire_confirmed,
      count(*) FILTER (WHERE a.type = 'fire.alarm' AND a.false_alarm) AS fire_false_alarms,
      count(*) FILTER (WHERE a.type LIKE 'security.%%' OR a.type LIKE 'access.%%')
        AS security_alerts
    FROM sv_alert a
    WHERE a.day >= %(start)s AND a.day < %(end)s AND {" AND ".join(afilter)}
    GROUP BY 1, 2),
du AS (
    SELECT {dkey} AS key, {_period("x.day", period)} AS period,
      coalesce(sum(x.open_s) FILTER (WHERE x.type = 'device.offline'), 0)
        + coalesce(sum(x.open_s * gw.devices) FILTER (WHERE x.type = 'gateway.offline'), 0)
        AS device_off_s,
      coalesce(sum(x.open_s) FILTER (WHERE x.type = 'gateway.offline'), 0) AS gateway_off_s,
      coalesce(sum(x.open_s) FILTER (WHERE x.type = 'fire.water_pressure_low'), 0) / 3600
        AS water_pressure_hours,
      coalesce(sum(x.open_s) FILTER (WHERE x.type = 'fire.electrical'), 0) / 3600
        AS electrical_hours
    FROM sv_alert_day x LEFT JOIN sv_gateway gw ON gw.gateway_id = x.device_id
    WHERE x.day >= %(start)s AND x.day < %(end)s AND {" AND ".join(xfilter)}
    GROUP BY 1, 2)
SELECT u.key, u.period, u.days,
  coalesce(al.alerts, 0) AS alerts, coalesce(al.critical, 0) AS critical,
  coalesce(al.major, 0) AS major, coalesce(al.minor, 0) AS minor, coalesce(al.info, 0) AS info,
  coalesce(al.acked, 0) AS acked, al.ack[1] AS ack_median_s, al.ack[2] AS ack_p90_s,
  al.res[1] AS resolve_median_s, al.res[2] AS resolve_p90_s,
  coalesce(al.escalated, 0) AS escalated, coalesce(al.overdue, 0) AS overdue,
  CASE WHEN u.device_days > 0 THEN greatest(0.0, 1 - coalesce(du.device_off_s, 0)
       / (u.device_days * 86400.0)) END AS device_online_ratio,
  CASE WHEN u.gateway_days > 0 THEN greatest(0.0, 1 - coalesce(du.gateway_off_s, 0)
       / (u.gateway_days * 86400.0)) END AS gateway_uptime,
  u.elevators, coalesce(al.trapped, 0) AS trapped,
  coalesce(al.elevator_faults, 0) AS elevator_faults,
  CASE WHEN u.elevators > 0 THEN coalesce(al.elevator_faults, 0) / u.elevators
       END AS faults_per_elevator,
  al.mack[1] AS maint_ack_median_s, al.mack[2] AS maint_ack_p90_s,
  coalesce(al.fire_alarms, 0) AS fire_alarms, coalesce(al.fire_confirmed, 0) AS fire_confirmed,
  coalesce(al.fire_false_alarms, 0) AS fire_false_alarms,
  coalesce(du.water_pressure_hours, 0) AS water_pressure_hours,
  coalesce(du.electrical_hours, 0) AS electrical_hours,
  coalesce(al.security_alerts, 0) AS security_alerts
FROM units u
LEFT JOIN al ON al.key = u.key AND al.period = u.period
LEFT JOIN du ON du.key = u.key AND du.period = u.period
ORDER BY u.period, u.key
"""


def month_bounds(month: date) -> tuple[date, date]:
    start = month.replace(day=1)
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return start, end


async def figures(
    conn: AsyncConnection,
    *,
    level: Level,
    period: Period,
    start: date,
    end: date,
    scope: Scope = EVERYTHING,
) -> list[dict[str, Any]]:
    """One row per (key, period) for local days ``start`` <= day < ``end``: the key (a
    company's or community's id), the period's first day, its number of days, and FIGURES.
    Whole months for ``Period.MONTH`` (give month starts): those are read from the monthly
    materialisation (``sv_month_cache``), and the months missing from it computed and kept."""
    if period is Period.DAY:
        return await _live(conn, level, period, start, end, scope)
    skey = "*" if scope.districts is None else ",".join(sorted(scope.districts))
    months = []
    m = start
    while m < end:
        months.append(m)
        m = month_bounds(m)[1]
    out: list[dict[str, Any]] = []
    async with conn.transaction():
        # Shared with other readers, exclusive with the refresh: what is kept matches the
        # rollup it was computed from.
        await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
        cur = await conn.execute(
            "SELECT month, rows FROM sv_month_cache WHERE level = %s AND scope = %s"
            " AND month = ANY(%s)",
            (str(level), skey, months),
        )
        cached = {mm: rows for mm, rows in await cur.fetchall()}
        missing = [mm for mm in months if mm not in cached]
        if missing and scope.ids is not None and len(scope.ids) <= _FEW:
            # A few keys (a company's file, a community's scorecard): their own rows, computed
            # over the missing span, are cheaper than every key's; nothing is kept.
            span = await _live(conn, level, period, missing[0], end, scope)
            for r in span:
                if r["period"] in missing:
                    cached.setdefault(r["period"], []).append(r)
            for mm in missing:
                cached.setdefault(mm, [])
        whole = Scope(scope.districts, None)
        for mm in months:
            rows = cached.get(mm)
            if rows is None:
                live = await _live(conn, level, period, mm, month_bounds(mm)[1], whole)
                rows = [{**r, "period": r["period"].isoformat()} for r in live]
                await conn.execute(
                    "INSERT INTO sv_month_cache (level, scope, month, rows)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (month, level, scope)"
                    " DO UPDATE SET rows = excluded.rows, computed_at = now()",
                    (str(level), skey, mm, Jsonb(rows)),
                )
            out.extend(r for r in rows if scope.ids is None or r["key"] in scope.ids)
    for r in out:
        if isinstance(r["period"], str):
            r["period"] = date.fromisoformat(r["period"])
    return out


_FEW: Final = 20


async def _live(
    conn: AsyncConnection, level: Level, period: Period, start: date, end: date, scope: Scope
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {
        "start": start,
        "end": end,
        "ndays": (end - start).days,
        "districts": list(scope.districts or ()),
        "ids": list(scope.ids or ()),
    }
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await _settings(conn)
        await cur.execute(figures_sql(level, period, scope).encode(), params)
        rows = await cur.fetchall()
    return [_clean(r) for r in rows]


async def _settings(conn: AsyncConnection) -> None:
    """For this transaction: no JIT (compiling these plans costs more than running them) and
    room to sort a month of a city's alerts in memory."""
    await conn.execute("SET LOCAL jit = off")
    await conn.execute("SET LOCAL work_mem = '64MB'")


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, float):
            v = round(v, 6)
        elif hasattr(v, "is_integer") and not isinstance(v, int):  # Decimal
            v = float(v)
        out[k] = v
    return out


async def alerts_by_type(
    conn: AsyncConnection,
    *,
    level: Level,
    period: Period,
    start: date,
    end: date,
    scope: Scope = EVERYTHING,
) -> list[dict[str, Any]]:
    """Alert counts by (key, period, type, severity)."""
    key = _ALERT_KEY[level]
    where = [f"{key} IS NOT NULL", "a.day >= %(start)s", "a.day < %(end)s"]
    if scope.districts is not None:
        where.append("a.district = ANY(%(districts)s)")
    if scope.ids is not None:
        where.append(f"{key} = ANY(%(ids)s)")
    q = (
        f"SELECT {key} AS key, {_period('a.day', period)} AS period, a.type, a.severity,"
        f" count(*) AS alerts FROM sv_alert a WHERE {' AND '.join(where)}"
        " GROUP BY 1, 2, 3, 4 ORDER BY 2, 1, 3, 4"
    )
    params = {
        "start": start,
        "end": end,
        "districts": list(scope.districts or ()),
        "ids": list(scope.ids or ()),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(q.encode(), params)
        return list(await cur.fetchall())


# Which alerts stand behind a figure (the evidence of a credit line or a scorecard line).
EVIDENCE: Final = {
    "escalated": "a.escalated",
    "overdue": "a.overdue",
    "trapped": "a.type = 'elevator.trapped'",
    "elevator_faults": f"a.type IN ({', '.join(repr(t) for t in ELEVATOR_FAULTS)})",
    "faults_per_elevator": f"a.type IN ({', '.join(repr(t) for t in ELEVATOR_FAULTS)})",
    "fire_alarms": "a.type = 'fire.alarm'",
    "fire_confirmed": "a.type = 'fire.alarm' AND a.confirmed",
    "fire_false_alarms": "a.type = 'fire.alarm' AND a.false_alarm",
    "critical": "a.severity = 'critical'",
    "security_alerts": "(a.type LIKE 'security.%%' OR a.type LIKE 'access.%%')",
    "ack_p90_s": "a.ack_property_s IS NOT NULL",
    "ack_median_s": "a.ack_property_s IS NOT NULL",
    "resolve_p90_s": "a.resolve_s IS NOT NULL",
    "resolve_median_s": "a.resolve_s IS NOT NULL",
    "maint_ack_p90_s": "a.ack_maintenance_s IS NOT NULL",
    "maint_ack_median_s": "a.ack_maintenance_s IS NOT NULL",
    "device_online_ratio": "a.type IN ('device.offline', 'gateway.offline')",
    "gateway_uptime": "a.type = 'gateway.offline'",
    "water_pressure_hours": "a.type = 'fire.water_pressure_low'",
    "electrical_hours": "a.type = 'fire.electrical'",
}
_EVIDENCE_ORDER: Final = {
    "ack_p90_s": "a.ack_property_s DESC",
    "ack_median_s": "a.ack_property_s DESC",
    "resolve_p90_s": "a.resolve_s DESC",
    "resolve_median_s": "a.resolve_s DESC",
    "maint_ack_p90_s": "a.ack_maintenance_s DESC",
    "maint_ack_median_s": "a.ack_maintenance_s DESC",
}


async def evidence(
    conn: AsyncConnection,
    *,
    figure: str,
    level: Level,
    key: str,
    start: date,
    end: date,
    limit: int = 20,
    districts: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """The alerts behind ``figure`` for one company or community: at most ``limit``, the
    slowest first for time figures, else in time order. Times are local (Asia/Shanghai)."""
    found = await evidence_many(
        conn,
        figure=figure,
        level=level,
        keys=(key,),
        start=start,
        end=end,
        limit=limit,
        districts=districts,
    )
    return found.get(key, [])


async def evidence_many(
    conn: AsyncConnection,
    *,
    figure: str,
    level: Level,
    keys: tuple[str, ...],
    start: date,
    end: date,
    limit: int = 20,
    districts: tuple[str, ...] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``evidence`` for several keys in one query."""
    cond = EVIDENCE.get(figure)
    if cond is None or not keys:
        return {}
    order = _EVIDENCE_ORDER.get(figure, "a.occurred_at")
    key = _ALERT_KEY[level]
    where = "" if districts is None else " AND a.district = ANY(%(districts)s)"
    q = (
        "SELECT * FROM (SELECT"
        f" {key} AS key, row_number() OVER (PARTITION BY {key} ORDER BY {order}, a.alert_id)"
        " AS rank, a.alert_id::text AS alert_id, a.type, a.severity, a.community_id,"
        " c.name AS community_name, a.device_id,"
        f" to_char(a.occurred_at AT TIME ZONE '{TZ}', 'YYYY-MM-DD HH24:MI:SS') AS occurred,"
        f" to_char(a.raised_at AT TIME ZONE '{TZ}', 'YYYY-MM-DD HH24:MI:SS') AS raised,"
        " a.deadline_s, round(a.ack_property_s::numeric, 1)::float8 AS ack_s,"
        " round(a.ack_maintenance_s::numeric, 1)::float8 AS maint_ack_s,"
        " round(a.resolve_s::numeric, 1)::float8 AS resolve_s, a.escalated, a.overdue"
        " FROM sv_alert a LEFT JOIN sv_community c USING (community_id)"
        f" WHERE {key} = ANY(%(keys)s) AND a.day >= %(start)s AND a.day < %(end)s"
        f" AND {cond}{where}) x WHERE rank <= %(limit)s ORDER BY key, rank"
    )
    params = {
        "keys": list(keys),
        "start": start,
        "end": end,
        "limit": limit,
        "districts": list(districts or ()),
    }
    out: dict[str, list[dict[str, Any]]] = {}
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await _settings(conn)
        await cur.execute(q.encode(), params)
        for r in await cur.fetchall():
            k = r.pop("key")
            r.pop("rank")
            out.setdefault(k, []).append(r)
    return out
