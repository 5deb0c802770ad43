"""The telemetry queries of the API and the screen; the same SQL on both storage modes.

- ``latest_state``: the newest value of every (device, metric) of a community: the registry
  (``device_registry``) and the catalogue (``device_metrics``) give the pairs, and each pair is
  one backward index probe (``readings_device_metric_ts``) into the newest partition holding it.
- ``metric_series``: a device's metric in time buckets; from ``readings_daily`` when the buckets
  are whole days and the range long, from ``readings_hourly`` when whole hours, else from the
  raw readings. The range is widened to whole buckets, so every source gives the same answer.
- ``events_by_community``: a community's events, newest first, optionally of one type
  (``events_device_type_ts`` / ``events_device_ts``, one probe per device).

See docs/storage.md for the plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg

ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_BUCKETS = 5_000
Source = Literal["raw", "hourly", "daily"]


class QueryError(ValueError):
    """A query's arguments cannot be answered (the message says why)."""


@dataclass(frozen=True, slots=True)
class Latest:
    device_id: str
    metric: str
    ts: datetime
    num: float | None
    txt: str | None
    flag: bool | None


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    n: int
    nnum: int
    total: float | None
    vmin: float | None
    vmax: float | None
    ntrue: int

    @property
    def avg(self) -> float | None:
        return self.total / self.nnum if self.nnum and self.total is not None else None


@dataclass(frozen=True, slots=True)
class Event:
    ts: datetime
    device_id: str
    type: str
    data: dict[str, Any]


def floor_to(t: datetime, step: timedelta) -> datetime:
    return ORIGIN + ((t - ORIGIN) // step) * step


def ceil_to(t: datetime, step: timedelta) -> datetime:
    f = floor_to(t, step)
    return f if f == t else f + step


def choose_source(start: datetime, end: datetime, bucket: timedelta) -> Source:
    """Daily figures for whole-day buckets over a week or more, hourly ones for whole-hour
    buckets over six hours or more, raw readings otherwise."""
    span = end - start
    if bucket % DAY == timedelta(0) and span >= 7 * DAY:
        return "daily"
    if bucket % HOUR == timedelta(0) and span >= 6 * HOUR:
        return "hourly"
    return "raw"


_LATEST = """
SELECT m.device_id, m.metric, l.ts, l.num, l.txt, l.flag
FROM device_registry d
JOIN device_metrics m ON m.device_id = d.device_id
CROSS JOIN LATERAL (
    SELECT r.ts, r.num, r.txt, r.flag FROM readings r
    WHERE r.device_id = m.device_id AND r.metric = m.metric
      AND r.ts >= %(since)s AND r.ts < %(until)s
    ORDER BY r.ts DESC LIMIT 1
) l
WHERE d.community_id = %(community)s
ORDER BY m.device_id, m.metric
"""


async def latest_state(
    conn: psycopg.AsyncConnection,
    community_id: str,
    *,
    now: datetime | None = None,
    lookback: timedelta = timedelta(days=30),
) -> list[Latest]:
    """Newest value of each (device, metric) of the community within ``lookback``."""
    now = now or datetime.now(UTC)
    cur = await conn.execute(
        _LATEST, {"community": community_id, "since": now - lookback, "until": now + DAY}
    )
    return [Latest(*row) for row in await cur.fetchall()]


_SERIES_RAW = """
SELECT date_bin(%(bucket)s, ts, %(origin)s) AS b, count(*), count(num), sum(num), min(num),
       max(num), count(*) FILTER (WHERE flag)
FROM readings
WHERE device_id = %(device)s AND metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s
GROUP BY 1 ORDER BY 1
"""
_SERIES_AGG = """
SELECT date_bin(%(bucket)s, bucket, %(origin)s) AS b, sum(n)::bigint, sum(nnum)::bigint,
       sum(total), min(vmin), max(vmax), sum(ntrue)::bigint
FROM {view}
WHERE device_id = %(device)s AND metric = %(metric)s AND bucket >= %(start)s
  AND bucket < %(end)s
GROUP BY 1 ORDER BY 1
"""


def series_sql(source: Source) -> str:
    if source == "raw":
        return _SERIES_RAW
    return _SERIES_AGG.format(view=f"readings_{source}")


async def metric_series(
    conn: psycopg.AsyncConnection,
    device_id: str,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    *,
    source: Source | None = None,
) -> tuple[Source, list[Bucket]]:
    """Buckets (only those holding readings) over [start, end) widened to whole buckets."""
    if bucket <= timedelta(0) or end <= start:
        raise QueryError("expected bucket > 0 and start < end")
    a, b = floor_to(start, bucket), ceil_to(end, bucket)
    if (b - a) / bucket > MAX_BUCKETS:
        raise QueryError(f"more than {MAX_BUCKETS} buckets; ask for wider buckets")
    src = source or choose_source(a, b, bucket)
    cur = await conn.execute(
        series_sql(src).encode(),
        {
            "bucket": bucket,
            "origin": ORIGIN,
            "device": device_id,
            "metric": metric,
            "start": a,
            "end": b,
        },
    )
    return src, [Bucket(*row) for row in await cur.fetchall()]


_EVENTS = """
SELECT e.ts, e.device_id, e.type, e.data
FROM device_registry d
CROSS JOIN LATERAL (
    SELECT ts, device_id, type, data FROM events e
    WHERE e.device_id = d.device_id {type_clause}
      AND e.ts >= %(start)s AND e.ts < %(end)s
    ORDER BY e.ts DESC LIMIT %(limit)s
) e
WHERE d.community_id = %(community)s
ORDER BY e.ts DESC, e.device_id LIMIT %(limit)s
"""


def events_sql(with_type: bool) -> str:
    return _EVENTS.format(type_clause="AND e.type = %(type)s" if with_type else "")


async def events_by_community(
    conn: psycopg.AsyncConnection,
    community_id: str,
    *,
    start: datetime,
    end: datetime,
    event_type: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """The community's events in [start, end), newest first, at most ``limit``."""
    cur = await conn.execute(
        events_sql(event_type is not None).encode(),
        {
            "community": community_id,
            "type": event_type,
            "start": start,
            "end": end,
            "limit": limit,
        },
    )
    return [Event(*row) for row in await cur.fetchall()]
