"""Schema migrations (both storage modes) and storage maintenance (plain) on a real PostgreSQL."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from backend.db import migrate as mig
from backend.db.maintenance import maintain_once, rematerialise
from backend.db.migrate import MIGRATIONS_DIR, MigrationError, StorageMode, migrate

pytestmark = pytest.mark.integration


def apply_v1(url: str) -> None:
    """The previous version: 0001 only, as the walking skeleton left it."""
    with psycopg.connect(url) as c:
        c.execute((MIGRATIONS_DIR / "0001_init.sql").read_text().encode())
        c.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        c.execute("INSERT INTO schema_migrations VALUES ('0001_init')")


def partitions(c: psycopg.Connection, parent: str) -> list[str]:
    return [
        r[0]
        for r in c.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass ORDER BY 1",
            (parent,),
        )
    ]


def test_from_empty_twice(db_url: str, storage: StorageMode) -> None:
    applied = migrate(db_url, prefer=storage)
    assert applied[0] == "0001_init" and "0002_b_timeseries" in applied
    assert migrate(db_url) == []
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT mode FROM anju_storage").fetchone() == (str(storage),)
        assert mig.detect_timescale(c) is (storage is StorageMode.TIMESCALE)
        if storage is StorageMode.TIMESCALE:
            return
        parts = partitions(c, "readings")
        assert "readings_default" in parts
        today = datetime.now(UTC).strftime("%Y%m%d")
        ahead = (datetime.now(UTC) + timedelta(days=6)).strftime("%Y%m%d")
        assert f"readings_p{today}" in parts and f"readings_p{ahead}" in parts


def test_from_two_processes_at_once(db_url: str, storage: StorageMode) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(db_url, prefer=storage))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(len(r) for r in results)[:2] == [0, 0]  # one applied, the others found it done


def test_from_the_previous_version_with_data(db_url: str, storage: StorageMode) -> None:
    """Version 1 with 10 days of data upgrades; every old reading is in the hourly figures
    (TimescaleDB: the initial refresh covers all history, not the policy's 3 days)."""
    apply_v1(db_url)
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(db_url) as c:
        c.execute(
            "INSERT INTO readings SELECT %s - g * interval '1 hour', 'd' || (g %% 3), 'temp', g,"
            " NULL, NULL, false FROM generate_series(0, 239) g",
            (now,),
        )
        c.execute("INSERT INTO readings VALUES ('1970-01-02Z', 'd1', 'temp', 1, NULL, NULL, true)")
        c.execute(
            "INSERT INTO readings VALUES (%s, 'd1', 'door', NULL, 'open', NULL, false)", (now,)
        )
        c.execute(
            "INSERT INTO events VALUES (%s, 'd1', 'alarm', '{\"z\": 1}', 'gw', 'b', 10, false)",
            (now,),
        )
        c.execute(
            "INSERT INTO ingest_records (gateway_id, boot_id, seq)"
            " SELECT 'gw', 'b', g FROM generate_series(1, 10) g WHERE g <> 5"
        )
        before = c.execute("SELECT count(*), sum(num) FROM readings").fetchone()
    assert migrate(db_url, prefer=storage) == ["0002_a_ingest", "0002_b_timeseries", *_later()]
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT count(*), sum(num) FROM readings").fetchone() == before
        if storage is StorageMode.PLAIN:
            assert c.execute("SELECT count(*) FROM readings_default").fetchone() == (1,)  # 1970
        assert c.execute("SELECT type, data FROM events").fetchall() == [("alarm", {"z": 1})]
        seen = c.execute("SELECT lane, seen::text FROM ingest_seen ORDER BY lane").fetchall()
        assert seen == [("e", "{[1,5),[6,11)}"), ("t", "{[1,5),[6,11)}")]
        assert c.execute("SELECT count(*) FROM ingest_records").fetchone() == (9,)
        assert c.execute("SELECT count(*) FROM device_metrics").fetchone() == (4,)
        # the rollup views already answer for the old data (plain: computed on the fly;
        # TimescaleDB: materialised by the migration's refresh)
        hourly = c.execute(
            "SELECT sum(n), sum(total) FROM readings_hourly WHERE metric = 'temp'"
            " AND bucket >= now() - interval '365 days'"
        ).fetchone()
        assert hourly == (240, float(sum(range(240))))
        daily = c.execute(
            "SELECT sum(n) FROM readings_daily WHERE metric = 'temp'"
            " AND bucket >= now() - interval '365 days'"
        ).fetchone()
        assert daily == (240,)


def _later() -> list[str]:
    return [m.version for m in mig.available() if m.version > "0002_b_timeseries"]


def test_migration_files_are_consistent(tmp_path: Path) -> None:
    ms = mig.available()
    assert [m.version for m in ms] == sorted(m.version for m in ms)
    for m in ms:
        m.path_for(StorageMode.PLAIN)
        m.path_for(StorageMode.TIMESCALE)
    (tmp_path / "0009_x.plain.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="needs both"):
        mig.available(tmp_path)


def test_timescale_sql_is_well_formed_as_far_as_checkable() -> None:
    """TimescaleDB is not on this machine: check the statements' shape and the API used
    (TimescaleDB 2.13+ names) without running them."""
    path = next(MIGRATIONS_DIR.glob("0002_b_*.timescale.sql"))
    inside, outside = mig.split_outside(path.read_text())
    sql = re.sub(r"--[^\n]*", "", inside)
    assert sql.count("(") == sql.count(")")
    calls = set(re.findall(r"^SELECT (\w+)\(", sql, re.M))
    assert calls == {
        "create_hypertable",
        "add_compression_policy",
        "add_retention_policy",
        "add_continuous_aggregate_policy",
        "time_bucket",  # the continuous aggregates' SELECT lists
    }
    assert "by_range('ts'" in sql and "migrate_data => true" in sql
    assert sql.count("WITH (timescaledb.continuous, timescaledb.materialized_only = false)") == 2
    assert sql.count("WITH NO DATA") == 2  # required inside the migration's transaction
    assert [s.split("(")[0] for s in outside] == ["CALL refresh_continuous_aggregate"] * 2
    # 0007: the hypertables' default (ts DESC) indexes go; the initial refresh is repeated
    # (safe to repeat) for databases whose 0002_b refresh failed after being recorded
    later = next(MIGRATIONS_DIR.glob("0007_*.timescale.sql")).read_text()
    inside7, outside7 = mig.split_outside(later)
    assert "DROP INDEX IF EXISTS readings_ts_idx;" in inside7
    assert outside7 == outside
    # the aggregates expose the columns the queries read, as the plain views do
    plain = next(MIGRATIONS_DIR.glob("0002_b_*.plain.sql")).read_text()
    for cols in ("n, nnum", "AS total", "AS vmin", "AS vmax", "AS ntrue"):
        assert cols in sql or cols in plain


async def test_maintenance_partitions_retention_and_rollups(db_url: str) -> None:
    """Plain storage's own maintenance (partitions and rollup tables)."""
    migrate(db_url, prefer=StorageMode.PLAIN)
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
        # partitions: an old one beyond retention, and a row in the default partition
        await c.execute(
            "SELECT anju_ensure_partitions('readings', 'day', %s, %s)",
            (now - timedelta(days=400), now - timedelta(days=399)),
        )
        # yesterday's too: the readings below go 3 hours back (past midnight, after 0:00 UTC)
        await c.execute(
            "SELECT anju_ensure_partitions('readings', 'day', %s, %s)",
            (now - timedelta(days=1), now),
        )
        far = now + timedelta(days=20)
        await c.execute("INSERT INTO readings VALUES (%s, 'd1', 'x', 1, NULL, NULL, false)", (far,))
        # readings over the last 3 hours, so that closed hours get materialised
        await c.execute(
            "INSERT INTO readings SELECT %s - g * interval '1 minute', 'd' || (g %% 2), 'x',"
            " g, NULL, g %% 3 = 0, false FROM generate_series(0, 180) g",
            (now,),
        )
        await c.execute(
            "UPDATE rollup_watermark SET until = %s, dirty_from = %s",
            (now - timedelta(hours=5), now - timedelta(hours=5)),
        )
        await c.execute(
            "UPDATE rollup_watermark SET until = date_bin('1 hour', until, '2000-01-01Z'),"
            " dirty_from = date_bin('1 hour', dirty_from, '2000-01-01Z')"
        )
        ref = await (
            await c.execute(
                "SELECT bucket, device_id, n, nnum, total, vmin, vmax, ntrue"
                " FROM readings_hourly ORDER BY 1, 2"
            )
        ).fetchall()
        report = await maintain_once(c)
        assert report.partitions_dropped >= 1
        assert report.hours_materialised >= 3
        mat = await (await c.execute("SELECT count(*) FROM readings_hourly_mat")).fetchone()
        assert mat is not None and mat[0] > 0
        after = await (
            await c.execute(
                "SELECT bucket, device_id, n, nnum, total, vmin, vmax, ntrue"
                " FROM readings_hourly ORDER BY 1, 2"
            )
        ).fetchall()
        assert after == ref  # materialised or computed, the view answers the same
        # a late reading in a materialised hour marks it dirty; the next pass recomputes it
        old = now - timedelta(hours=2, minutes=30)
        await c.execute(
            "INSERT INTO readings VALUES (%s, 'd0', 'x', 1000, NULL, NULL, false)", (old,)
        )
        await c.execute(
            "INSERT INTO rollup_dirty VALUES (date_bin('1 hour', %s::timestamptz,"
            " '2000-01-01Z'), 'd0')",
            (old,),
        )
        report = await maintain_once(c)
        assert report.dirty_recomputed == 1
        row = await (
            await c.execute(
                "SELECT vmax FROM readings_hourly_mat WHERE device_id = 'd0'"
                " AND bucket = date_bin('1 hour', %s::timestamptz, '2000-01-01Z')",
                (old,),
            )
        ).fetchone()
        assert row == (1000.0,)
        # the far-future row moves out of the default partition once its partition is made
        await c.execute(
            "UPDATE storage_policy SET create_ahead = '25 days' WHERE relation = 'readings'"
        )
        await maintain_once(c)
        moved = await (await c.execute("SELECT count(*) FROM readings_default")).fetchone()
        assert moved == (0,)
        assert await (
            await c.execute("SELECT count(*) FROM readings WHERE ts = %s", (far,))
        ).fetchone() == (1,)


async def test_rematerialise_after_a_bulk_load_below_the_watermark(db_url: str) -> None:
    """Plain storage: rows loaded below the rollups' watermarks without dirty marks (a bulk
    load, as the ingest bench's history on a used database) are counted after
    ``rematerialise``."""
    migrate(db_url, prefer=StorageMode.PLAIN)
    now = datetime.now(UTC)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
        await c.execute(
            "SELECT anju_ensure_partitions('readings', 'day', %s, %s)",
            (now - timedelta(days=3), now),
        )
        wm = now - timedelta(days=3)
        await c.execute(
            "UPDATE rollup_watermark SET until = date_bin('1 day', %s::timestamptz,"
            " '2000-01-01Z'), dirty_from = date_bin('1 day', %s::timestamptz, '2000-01-01Z')",
            (wm, wm),
        )
        load = (
            "INSERT INTO readings SELECT %s - g * interval '7 minutes', 'd' || (g %% 3), 'x', g,"
            " NULL, NULL, false FROM generate_series(0, 500) g"
        )
        await c.execute(load, (now,))
        while (await maintain_once(c, max_hours=24 * 4)).hours_materialised:
            pass
        await c.execute(load, (now - timedelta(minutes=3),))  # no dirty marks
        cur = await c.execute("SELECT sum(n)::int FROM readings_daily")
        row = await cur.fetchone()
        assert row is not None and row[0] < 1002  # below the watermark: not seen yet
        await rematerialise(c, wm)
        cur = await c.execute(
            "SELECT (SELECT sum(n)::int FROM readings_daily),"
            " (SELECT sum(n)::int FROM readings_hourly), (SELECT count(*)::int FROM readings)"
        )
        assert await cur.fetchone() == (1002, 1002, 1002)
