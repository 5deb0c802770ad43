"""The supervision rollup: one row per alert (``sv_alert``) and per (alert, local day) of open
time (``sv_alert_day``), kept up to date from the audit log, and a snapshot of the registry.

``refresh`` reads the audit entries written since its watermark (``alert_audit.n``: audit
writers hold one advisory lock until commit, so ``n`` grows in commit order) and recomputes
the rows of every alert they touch, plus every alert still open (its open time and overdue
flag grow with the clock). Late data needs nothing special: an alert raised today for a
reading of yesterday lands on yesterday (its ``occurred_at``), whenever it arrives, and the
figures are read from the rollup at query time. The same SQL runs on plain PostgreSQL and on
TimescaleDB.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

from psycopg import AsyncConnection

from anju.registry import CityIndex
from backend.alerting.catalog import ACK_DEADLINE_MS, FIRE_ACK_DEADLINE_MS

TZ: Final = "Asia/Shanghai"
ROLLUP_LOCK: Final = 0x73757076  # "supv": one refresh at a time (readers share it)
# Alert types whose open time is a figure (outages, out of range).
DURATION_TYPES: Final = (
    "device.offline",
    "gateway.offline",
    "fire.water_pressure_low",
    "fire.electrical",
)
# A person resolving with a note that says so marks a false alarm.
FALSE_ALARM_PATTERN: Final = "误报|false alarm"
SYSTEM_ACTORS: Final = ("rules", "deadline")

_FACTS_SQL: Final = f"""
INSERT INTO sv_alert
SELECT a.id, a.community_id, a.district,
       (SELECT x->>'scope' FROM jsonb_array_elements(a.payload->'audiences') x
         WHERE x->>'audience' = 'property' LIMIT 1),
       (SELECT x->>'scope' FROM jsonb_array_elements(a.payload->'audiences') x
         WHERE x->>'audience' = 'maintenance' LIMIT 1),
       a.device_id, coalesce(a.payload->>'device_kind', ''), a.payload->>'building',
       a.type, a.severity,
       (a.occurred_at AT TIME ZONE '{TZ}')::date,
       a.occurred_at, a.raised_at, a.resolved_at,
       extract(epoch FROM ack.p - a.raised_at), extract(epoch FROM ack.m - a.raised_at),
       extract(epoch FROM a.resolved_at - a.raised_at),
       dl.s,
       coalesce((a.payload->'evidence'->>'escalated')::boolean, false),
       dl.s IS NOT NULL AND least(extract(epoch FROM ack.p - a.raised_at),
                                  extract(epoch FROM a.resolved_at - a.raised_at),
                                  extract(epoch FROM %(now)s - a.raised_at)) > dl.s,
       coalesce((a.payload->'evidence'->>'confirmed')::boolean, false),
       a.resolved_at IS NOT NULL AND res.actor IS NOT NULL
         AND res.actor <> ALL(%(system)s)
         AND coalesce(a.payload->'evidence'->>'resolution', '') ~* %(false_alarm)s,
       res.actor
FROM alerts a
CROSS JOIN LATERAL (
    SELECT min((x->>'at')::timestamptz) FILTER (WHERE x->>'audience' = 'property') AS p,
           min((x->>'at')::timestamptz) FILTER (WHERE x->>'audience' = 'maintenance') AS m
    FROM jsonb_array_elements(a.payload->'acks') x) ack
CROSS JOIN LATERAL (
    SELECT CASE WHEN a.severity <> 'critical' THEN NULL
                ELSE coalesce((a.payload->'evidence'->>'ack_deadline_s')::double precision,
                              CASE WHEN a.type LIKE 'fire.%%' THEN {FIRE_ACK_DEADLINE_MS / 1000}
                                   ELSE {ACK_DEADLINE_MS / 1000} END) END AS s) dl
LEFT JOIN LATERAL (
    SELECT actor FROM alert_audit u WHERE u.alert_id = a.id AND u.action = 'resolved'
    ORDER BY n DESC LIMIT 1) res ON a.resolved_at IS NOT NULL
WHERE a.id IN (SELECT id FROM sv_touched)
"""

_DAYS_SQL: Final = f"""
INSERT INTO sv_alert_day
SELECT f.alert_id, d.day, f.community_id, f.district, f.property_org, f.maintenance_org,
       f.device_id, f.type,
       extract(epoch FROM least(f.until, (d.day + 1)::timestamp AT TIME ZONE '{TZ}')
                        - greatest(f.occurred_at, d.day::timestamp AT TIME ZONE '{TZ}'))
FROM (SELECT s.*, coalesce(s.resolved_at, greatest(%(now)s, s.occurred_at)) AS until
      FROM sv_alert s
      WHERE s.alert_id IN (SELECT id FROM sv_touched) AND s.type = ANY(%(types)s)) f
CROSS JOIN LATERAL (
    SELECT g::date AS day FROM generate_series(
        (f.occurred_at AT TIME ZONE '{TZ}')::date,
        (f.until AT TIME ZONE '{TZ}')::date, interval '1 day') g) d
WHERE least(f.until, (d.day + 1)::timestamp AT TIME ZONE '{TZ}')
      > greatest(f.occurred_at, d.day::timestamp AT TIME ZONE '{TZ}')
"""


# The months the touched alerts were (before) or are (after) counted in: their monthly
# materialisation is stale.
_STALE_MONTHS: Final = """
DELETE FROM sv_month_cache WHERE month IN (
    SELECT date_trunc('month', day)::date FROM sv_alert
    WHERE alert_id IN (SELECT id FROM sv_touched)
    UNION SELECT date_trunc('month', day)::date FROM sv_alert_day
    WHERE alert_id IN (SELECT id FROM sv_touched))
"""


async def refresh(conn: AsyncConnection, *, now: datetime | None = None) -> int:
    """Bring the rollup up to date; returns how many alerts were recomputed. ``now`` (the
    database's clock by default) is where the open time of alerts still open ends."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        cur = await conn.execute(
            "SELECT upto, coalesce((SELECT max(n) FROM alert_audit), 0), now()"
            " FROM sv_watermark WHERE name = 'alerts'"
        )
        row = await cur.fetchone()
        assert row is not None, "migration 0008 inserts the watermark"
        upto, top, db_now = row
        when = now or db_now
        await conn.execute("CREATE TEMP TABLE sv_touched (id uuid PRIMARY KEY) ON COMMIT DROP")
        await conn.execute(
            "INSERT INTO sv_touched SELECT alert_id FROM alert_audit WHERE n > %s AND n <= %s"
            " UNION SELECT id FROM alerts WHERE state <> 'resolved'"
            " UNION SELECT alert_id FROM sv_alert WHERE resolved_at IS NULL",
            (upto, top),
        )
        cur = await conn.execute("SELECT count(*) FROM sv_touched")
        count_row = await cur.fetchone()
        touched = int(count_row[0]) if count_row else 0
        if touched:
            await conn.execute("ANALYZE sv_touched")
            await conn.execute(_STALE_MONTHS)
            await conn.execute(
                "DELETE FROM sv_alert_day WHERE alert_id IN (SELECT id FROM sv_touched)"
            )
            await conn.execute("DELETE FROM sv_alert WHERE alert_id IN (SELECT id FROM sv_touched)")
            params = {
                "now": when,
                "system": list(SYSTEM_ACTORS),
                "false_alarm": FALSE_ALARM_PATTERN,
                "types": list(DURATION_TYPES),
            }
            await conn.execute(_FACTS_SQL, params)
            await conn.execute(_DAYS_SQL, params)
            await conn.execute(_STALE_MONTHS)
        await conn.execute(
            "UPDATE sv_watermark SET upto = %s, updated_at = now() WHERE name = 'alerts'",
            (top,),
        )
    return touched


async def sync_registry(conn: AsyncConnection, city: CityIndex, *, today: date) -> None:
    """Snapshot the registry: communities with their device, gateway and elevator counts,
    gateways with their devices, maintenance companies' elevators, organisations, and a new
    tenure row (from ``today``) for each community whose property company changed."""
    coms = []
    gws: dict[str, tuple[str, int]] = {}
    maint: dict[tuple[str, str], int] = {}
    for com in city.registry.communities:
        elevators = [d for d in com.devices if d.kind == "elevator"]
        coms.append(
            (com.id, com.name, com.district, len(com.devices), len(com.gateways), len(elevators))
        )
        for gw in com.gateways:
            n = sum(1 for d in com.devices if d.gateway == gw.id)
            gws[gw.id] = (com.id, n)
        for d in elevators:
            if d.maintenance:
                maint[(com.id, d.maintenance)] = maint.get((com.id, d.maintenance), 0) + 1
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK,))
        before = await _snapshot_digest(conn)
        await conn.execute("DELETE FROM sv_community")
        await conn.execute("DELETE FROM sv_gateway")
        await conn.execute("DELETE FROM sv_maintenance")
        await conn.execute("DELETE FROM sv_org")
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO sv_community (community_id, name, district, devices, gateways,"
                " elevators) VALUES (%s, %s, %s, %s, %s, %s)",
                coms,
            )
            await cur.executemany(
                "INSERT INTO sv_gateway VALUES (%s, %s, %s)",
                [(g, c, n) for g, (c, n) in gws.items()],
            )
            await cur.executemany(
                "INSERT INTO sv_maintenance VALUES (%s, %s, %s)",
                [(c, m, n) for (c, m), n in maint.items()],
            )
            await cur.executemany(
                "INSERT INTO sv_org VALUES (%s, %s, %s)",
                [(o.id, o.kind, o.name) for o in city.registry.organisations],
            )
            # A community seen for the first time is held by its company since ever; a change
            # of company starts a new tenure today.
            await cur.executemany(
                "INSERT INTO sv_tenure (community_id, since, property_org)"
                " SELECT %(c)s, CASE WHEN EXISTS (SELECT 1 FROM sv_tenure"
                "   WHERE community_id = %(c)s) THEN %(today)s ELSE DATE '2000-01-01' END, %(p)s"
                " WHERE %(p)s IS DISTINCT FROM (SELECT property_org FROM sv_tenure"
                "   WHERE community_id = %(c)s ORDER BY since DESC LIMIT 1)"
                " ON CONFLICT (community_id, since)"
                " DO UPDATE SET property_org = excluded.property_org",
                [{"c": c.id, "p": c.property, "today": today} for c in city.registry.communities],
            )
        if await _snapshot_digest(conn) != before:
            # Device counts or tenures changed: every materialised month may be off.
            await conn.execute("DELETE FROM sv_month_cache")


_DIGEST: Final = """
SELECT md5(concat_ws('|',
    (SELECT string_agg(concat_ws(',', community_id, district, devices, gateways, elevators),
                       ';' ORDER BY community_id) FROM sv_community),
    (SELECT string_agg(concat_ws(',', gateway_id, community_id, devices), ';'
                       ORDER BY gateway_id) FROM sv_gateway),
    (SELECT string_agg(concat_ws(',', community_id, maintenance_org, elevators), ';'
                       ORDER BY community_id, maintenance_org) FROM sv_maintenance),
    (SELECT string_agg(concat_ws(',', community_id, since, property_org), ';'
                       ORDER BY community_id, since) FROM sv_tenure)))
"""


async def _snapshot_digest(conn: AsyncConnection) -> str:
    """What the figures' denominators depend on, as one digest."""
    cur = await conn.execute(_DIGEST)
    row = await cur.fetchone()
    return str(row[0]) if row else ""
