"""Periodic storage maintenance, in both storage modes.

Each pass, under an advisory lock so that several backends may run it:

Plain PostgreSQL:

1. partitions: create those of the next ``create_ahead`` (``storage_policy``), drop those older
   than ``keep``; rows that fell into a default partition move into the partition made for them;
2. rollups: recompute the (hour, device) buckets that late readings made dirty, then
   materialise the hours that closed ``grace`` ago, then the days those hours complete;

TimescaleDB (backend/db/timescale_jobs.py):

1. aggregates: refresh both continuous aggregates over all of history up to the hour that
   closed ``grace`` ago; TimescaleDB materialises only the ranges its invalidation log holds,
   so late data of any age reaches them (its policies look back 3 and 5 days only);
2. jobs: read ``timescaledb_information.jobs`` / ``job_stats``; compression, retention and
   refresh jobs that fail or are overdue are counted in metrics, logged, and run here
   (``CALL run_job``) so that storage keeps working when the scheduler cannot;

and in both: forget duplicate-dropping state of boots not heard from for longer than ``keep``.

The ``readings_hourly`` / ``readings_daily`` views (real-time aggregates on TimescaleDB) add the
not-yet-materialised buckets on the fly, so maintenance running late makes queries slower,
never wrong. See docs/storage.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from anju.backoff import backoff
from backend.db.migrate import StorageMode
from backend.db.timescale_jobs import JobWatch, refresh_aggregates, watch_jobs

log = logging.getLogger("anju.db.maintenance")

_LOCK_KEY = 0x616E6A6D  # "anjm"
ORIGIN = "2000-01-01 00:00:00+00"
_AGGS = "count(*), count(r.num), sum(r.num), min(r.num), max(r.num), count(*) FILTER (WHERE r.flag)"
_SUMS = (
    "sum(h.n)::bigint, sum(h.nnum)::bigint, sum(h.total), min(h.vmin), max(h.vmax),"
    " sum(h.ntrue)::bigint"
)
_UPSERT = (
    " ON CONFLICT (device_id, metric, bucket) DO UPDATE SET n = excluded.n,"
    " nnum = excluded.nnum, total = excluded.total, vmin = excluded.vmin,"
    " vmax = excluded.vmax, ntrue = excluded.ntrue"
)


@dataclass(slots=True)
class MaintenanceReport:
    mode: StorageMode
    partitions_created: int = 0
    partitions_dropped: int = 0
    dirty_recomputed: int = 0
    hours_materialised: int = 0
    days_materialised: int = 0
    boots_forgotten: int = 0
    aggregates_refreshed: bool = False
    jobs_unhealthy: int = 0
    jobs_run: int = 0


async def read_mode(conn: psycopg.AsyncConnection) -> StorageMode:
    cur = await conn.execute("SELECT mode FROM anju_storage")
    row = await cur.fetchone()
    return StorageMode(row[0]) if row else StorageMode.PLAIN


async def maintain_once(
    conn: psycopg.AsyncConnection,
    *,
    grace: timedelta = timedelta(minutes=5),
    max_hours: int = 48,
    watch: JobWatch | None = None,
) -> MaintenanceReport:
    """One maintenance pass on an autocommit connection (skipped, and an empty report returned,
    while another backend holds the maintenance lock). ``watch`` keeps what the TimescaleDB job
    watch learnt between passes (and its metrics); a fresh one when not given."""
    report = MaintenanceReport(await read_mode(conn))
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,))
    row = await cur.fetchone()
    if not (row and row[0]):
        return report  # another backend is at it
    try:
        if report.mode is StorageMode.PLAIN:
            async with conn.transaction():
                await _partitions(conn, report)
        cur = await conn.execute(
            "WITH d AS (DELETE FROM ingest_seen WHERE updated_at < now() - (SELECT keep"
            " FROM storage_policy WHERE relation = 'ingest_seen') RETURNING 1)"
            " SELECT count(*) FROM d"
        )
        row = await cur.fetchone()
        report.boots_forgotten = int(row[0]) if row else 0
        if report.mode is StorageMode.PLAIN:
            await _rollups(conn, report, grace, max_hours)
        else:
            # The jobs first: a refresh that fails must not hide them.
            unhealthy, ran = await watch_jobs(conn, watch or JobWatch())
            report.jobs_unhealthy, report.jobs_run = unhealthy, ran
            await refresh_aggregates(conn, grace)
            report.aggregates_refreshed = True
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return report


async def _partitions(conn: psycopg.AsyncConnection, report: MaintenanceReport) -> None:
    cur = await conn.execute(
        "SELECT relation, partition_unit, create_ahead, keep FROM storage_policy"
        " WHERE partition_unit IS NOT NULL ORDER BY relation"
    )
    for rel, unit, ahead, keep in await cur.fetchall():
        c = await conn.execute(
            "SELECT anju_ensure_partitions(%s, %s, now(), now() + %s)", (rel, unit, ahead)
        )
        made = await c.fetchone()
        report.partitions_created += int(made[0]) if made else 0
        if keep is not None:
            c = await conn.execute("SELECT anju_drop_partitions(%s, now() - %s)", (rel, keep))
            dropped = await c.fetchone()
            report.partitions_dropped += int(dropped[0]) if dropped else 0
    for rel in ("readings_hourly", "readings_daily"):
        await conn.execute(
            f"DELETE FROM {rel}_mat WHERE bucket < now() - (SELECT keep FROM storage_policy"
            f" WHERE relation = '{rel}')".encode()
        )


async def _watermark(conn: psycopg.AsyncConnection, name: str) -> tuple[object, object]:
    cur = await conn.execute(
        "SELECT until, dirty_from FROM rollup_watermark WHERE name = %s", (name,)
    )
    row = await cur.fetchone()
    assert row is not None, f"rollup_watermark {name} missing"
    return row[0], row[1]


async def _rollups(
    conn: psycopg.AsyncConnection, report: MaintenanceReport, grace: timedelta, max_hours: int
) -> None:
    # 1. Late readings: recompute dirty (hour, device) buckets below the materialised mark,
    #    and the days they belong to.
    async with conn.transaction():
        until, _ = await _watermark(conn, "hourly")
        day_until, _ = await _watermark(conn, "daily")
        await conn.execute(
            "CREATE TEMP TABLE dirty_now ON COMMIT DROP AS WITH d AS ("
            " DELETE FROM rollup_dirty WHERE bucket < %s RETURNING bucket, device_id)"
            " SELECT * FROM d",
            (until,),
        )
        cur = await conn.execute("SELECT count(*) FROM dirty_now")
        row = await cur.fetchone()
        report.dirty_recomputed = int(row[0]) if row else 0
        if report.dirty_recomputed:
            await conn.execute(
                "DELETE FROM readings_hourly_mat m USING dirty_now d"
                " WHERE m.device_id = d.device_id AND m.bucket = d.bucket"
            )
            await conn.execute(
                f"INSERT INTO readings_hourly_mat SELECT d.bucket, r.device_id, r.metric, {_AGGS}"
                " FROM dirty_now d JOIN readings r ON r.device_id = d.device_id"
                " AND r.ts >= d.bucket AND r.ts < d.bucket + interval '1 hour'"
                " GROUP BY d.bucket, r.device_id, r.metric".encode()
            )
            await conn.execute(
                "CREATE TEMP TABLE dirty_days ON COMMIT DROP AS SELECT DISTINCT"
                f" date_bin('1 day', bucket, '{ORIGIN}') AS day, device_id FROM dirty_now"
                " WHERE bucket < %s".encode(),
                (day_until,),
            )
            await conn.execute(
                "DELETE FROM readings_daily_mat m USING dirty_days d"
                " WHERE m.device_id = d.device_id AND m.bucket = d.day"
            )
            await conn.execute(
                f"INSERT INTO readings_daily_mat SELECT d.day, h.device_id, h.metric, {_SUMS}"
                " FROM dirty_days d JOIN readings_hourly_mat h ON h.device_id = d.device_id"
                " AND h.bucket >= d.day AND h.bucket < d.day + interval '1 day'"
                " GROUP BY d.day, h.device_id, h.metric".encode()
            )
    # 2. Closed hours: first move dirty_from (waits for ingest transactions holding the row
    #    FOR SHARE, so every later commit below it marks its buckets dirty), then materialise.
    cur = await conn.execute(
        f"SELECT least(date_bin('1 hour', now() - %s, '{ORIGIN}'),"
        " until + make_interval(hours => %s)), until"
        " FROM rollup_watermark WHERE name = 'hourly'".encode(),
        (grace, max_hours),
    )
    row = await cur.fetchone()
    assert row is not None
    new_until, until = row
    if new_until > until:
        async with conn.transaction():
            await conn.execute(
                "UPDATE rollup_watermark SET dirty_from = greatest(dirty_from, %s)"
                " WHERE name = 'hourly'",
                (new_until,),
            )
        async with conn.transaction():
            await conn.execute(
                f"INSERT INTO readings_hourly_mat SELECT date_bin('1 hour', r.ts, '{ORIGIN}'),"
                f" r.device_id, r.metric, {_AGGS} FROM readings r"
                " WHERE r.ts >= %s AND r.ts < %s GROUP BY 1, 2, 3".encode()
                + _UPSERT.encode(),
                (until, new_until),
            )
            await conn.execute(
                "UPDATE rollup_watermark SET until = %s WHERE name = 'hourly'", (new_until,)
            )
        report.hours_materialised = int((new_until - until).total_seconds() // 3600)
    # 3. Days complete in the hourly rollup.
    async with conn.transaction():
        cur = await conn.execute(
            f"SELECT date_bin('1 day', h.until, '{ORIGIN}'), d.until FROM rollup_watermark h,"
            " rollup_watermark d WHERE h.name = 'hourly' AND d.name = 'daily'".encode()
        )
        row = await cur.fetchone()
        assert row is not None
        new_day, day_until = row
        if new_day > day_until:
            await conn.execute(
                f"INSERT INTO readings_daily_mat SELECT date_bin('1 day', h.bucket, '{ORIGIN}'),"
                f" h.device_id, h.metric, {_SUMS} FROM readings_hourly_mat h"
                " WHERE h.bucket >= %s AND h.bucket < %s GROUP BY 1, 2, 3".encode()
                + _UPSERT.encode(),
                (day_until, new_day),
            )
            await conn.execute(
                "UPDATE rollup_watermark SET until = %s, dirty_from = %s WHERE name = 'daily'",
                (new_day, new_day),
            )
            report.days_materialised = int((new_day - day_until).total_seconds() // 86400)


async def rematerialise(conn: psycopg.AsyncConnection, start: datetime) -> None:
    """Plain storage: recompute the rollup tables from ``start`` (floored to a day) up to their
    watermarks from the readings, by time range (one scan), for bulk loads below the
    watermarks, where marking every (hour, device) dirty would cost an index walk each."""
    async with conn.transaction():
        until, _ = await _watermark(conn, "hourly")
        day_until, _ = await _watermark(conn, "daily")
        cur = await conn.execute(f"SELECT date_bin('1 day', %s, '{ORIGIN}')".encode(), (start,))
        row = await cur.fetchone()
        assert row is not None
        lo = row[0]
        await conn.execute(
            "DELETE FROM readings_hourly_mat WHERE bucket >= %s AND bucket < %s", (lo, until)
        )
        await conn.execute(
            f"INSERT INTO readings_hourly_mat SELECT date_bin('1 hour', r.ts, '{ORIGIN}'),"
            f" r.device_id, r.metric, {_AGGS} FROM readings r"
            " WHERE r.ts >= %s AND r.ts < %s GROUP BY 1, 2, 3".encode(),
            (lo, until),
        )
        await conn.execute(
            "DELETE FROM rollup_dirty WHERE bucket >= %s AND bucket < %s", (lo, until)
        )
        await conn.execute(
            "DELETE FROM readings_daily_mat WHERE bucket >= %s AND bucket < %s", (lo, day_until)
        )
        await conn.execute(
            f"INSERT INTO readings_daily_mat SELECT date_bin('1 day', h.bucket, '{ORIGIN}'),"
            f" h.device_id, h.metric, {_SUMS} FROM readings_hourly_mat h"
            " WHERE h.bucket >= %s AND h.bucket < %s GROUP BY 1, 2, 3".encode(),
            (lo, day_until),
        )


async def run_maintenance(
    pool_or_conninfo: AsyncConnectionPool | str,
    *,
    interval_s: float = 60.0,
    grace: timedelta = timedelta(minutes=5),
    stop: asyncio.Event | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """Run a maintenance pass every ``interval_s`` until cancelled (or ``stop`` is set).
    A database error is logged and retried with backoff; it never ends the loop. The
    TimescaleDB jobs' health goes to ``registry`` (the backend's metrics) when given."""
    delays = backoff(1.0, 60.0)
    stop = stop or asyncio.Event()
    watch = JobWatch(registry)
    first = True
    while not stop.is_set():
        wait = interval_s
        try:
            report = await _pass(pool_or_conninfo, grace, watch)
            if first:
                log.info("storage maintenance: %s storage", report.mode)
                first = False
            if report.partitions_created or report.partitions_dropped:
                log.info("storage maintenance: %s", report)
            delays = backoff(1.0, 60.0)
        except psycopg.Error as exc:
            wait = next(delays)
            log.warning("storage maintenance failed (%s); again in %.0f s", exc, wait)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)


async def _pass(
    pool_or_conninfo: AsyncConnectionPool | str, grace: timedelta, watch: JobWatch
) -> MaintenanceReport:
    if isinstance(pool_or_conninfo, str):
        async with await psycopg.AsyncConnection.connect(pool_or_conninfo, autocommit=True) as conn:
            return await maintain_once(conn, grace=grace, watch=watch)
    async with pool_or_conninfo.connection() as conn:
        await conn.set_autocommit(True)
        try:
            return await maintain_once(conn, grace=grace, watch=watch)
        finally:
            await conn.set_autocommit(False)
