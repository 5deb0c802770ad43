"""The telemetry queries, in both storage modes, against a brute-force reference in Python."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import queries as q
from backend.db.maintenance import maintain_once
from backend.db.migrate import StorageMode, migrate
from backend.db.registry import RegistryRow, sync_registry

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
DEVICES = [("d0", "c1"), ("d1", "c1"), ("d2", "c1"), ("d3", "c2")]
METRICS = ["temp", "door", "moving"]
SPAN_MIN = 10 * 24 * 60  # readings over the last ten days

value = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False), st.booleans(), st.sampled_from(["open", "closed"])
)
reading = st.tuples(st.sampled_from([d for d, _ in DEVICES] + ["d9"]), st.sampled_from(METRICS),
                    st.integers(0, SPAN_MIN), value)  # fmt: skip
event = st.tuples(st.sampled_from([d for d, _ in DEVICES]), st.sampled_from(["fire", "trap"]),
                  st.integers(0, SPAN_MIN))  # fmt: skip


def cols(v: Any) -> tuple[float | None, str | None, bool | None]:
    if isinstance(v, bool):
        return None, None, v
    if isinstance(v, float):
        return v, None, None
    return None, v, None


@pytest.fixture
async def conn(db_url: str, storage: StorageMode) -> Any:
    migrate(db_url, prefer=storage)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
        await sync_registry(c, [RegistryRow(d, com, "x") for d, com in DEVICES])
        if storage is StorageMode.PLAIN:
            # partitions for the last 5 days only: older rows sit in the default partition
            await c.execute(
                "SELECT anju_ensure_partitions('readings', 'day', %s, %s)",
                (NOW - timedelta(days=5), NOW),
            )
        yield c


async def load(c: psycopg.AsyncConnection, rs: list[Any], es: list[Any], mat_hours: int) -> None:
    """The rows, and maintenance: on plain storage ``mat_hours`` of them materialised and the
    rest computed on the fly; on TimescaleDB a refresh (DELETE, not TRUNCATE: the aggregates
    hear of deleted rows through their invalidation log), with the last hour on the fly."""
    cur = await c.execute("SELECT mode FROM anju_storage")
    mode = StorageMode(((await cur.fetchone()) or ("plain",))[0])
    if mode is StorageMode.PLAIN:
        await c.execute(
            "TRUNCATE readings, events, device_metrics, readings_hourly_mat, readings_daily_mat,"
            " rollup_dirty"
        )
        wm = q.floor_to(NOW - timedelta(days=11), timedelta(days=1))
        await c.execute("UPDATE rollup_watermark SET until = %s, dirty_from = %s", (wm, wm))
    else:
        await c.execute("DELETE FROM readings")
        await c.execute("TRUNCATE events, device_metrics")
        mat_hours = mat_hours or 1
    async with c.cursor().copy(
        "COPY readings (ts, device_id, metric, num, txt, flag) FROM STDIN"
    ) as cp:
        for dev, metric, minute, v in rs:
            await cp.write_row((NOW - timedelta(minutes=minute), dev, metric, *cols(v)))
    async with c.cursor().copy(
        "COPY events (ts, device_id, type, data, gateway_id, boot_id, seq) FROM STDIN"
    ) as cp:
        for i, (dev, typ, minute) in enumerate(es):
            await cp.write_row(
                (NOW - timedelta(minutes=minute), dev, typ, json.dumps({"i": i}), "gw", "b", i)
            )
    await c.execute("INSERT INTO device_metrics SELECT DISTINCT device_id, metric FROM readings")
    if mat_hours:
        await maintain_once(c, max_hours=mat_hours)  # part materialised, the rest on the fly


def unique_ts(rs: list[Any]) -> list[Any]:
    seen, out = set(), []
    for r in rs:
        if (r[0], r[1], r[2]) not in seen:
            seen.add((r[0], r[1], r[2]))
            out.append(r)
    return out


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rs=st.lists(reading, max_size=150).map(unique_ts),
    es=st.lists(event, max_size=30, unique_by=lambda e: e[2]),
    mat_hours=st.sampled_from([0, 30, 48]),
    bucket=st.sampled_from([timedelta(minutes=15), timedelta(hours=1), timedelta(hours=6),
                            timedelta(days=1)]),
    span_h=st.integers(1, 240),
    offset_h=st.integers(0, 240),
)  # fmt: skip
async def test_queries_match_brute_force(
    conn: psycopg.AsyncConnection,
    rs: list[Any],
    es: list[Any],
    mat_hours: int,
    bucket: timedelta,
    span_h: int,
    offset_h: int,
) -> None:
    await load(conn, rs, es, mat_hours)
    rows = [(NOW - timedelta(minutes=m), d, metric, v) for d, metric, m, v in rs]

    # latest state of community c1
    got = await q.latest_state(conn, "c1", now=NOW, lookback=timedelta(days=30))
    newest: dict[tuple[str, str], tuple[datetime, Any]] = {}
    for ts, d, metric, v in rows:
        if dict(DEVICES).get(d) == "c1" and (
            (d, metric) not in newest or ts > newest[(d, metric)][0]
        ):
            newest[(d, metric)] = (ts, v)  # fmt: skip
    assert [(x.device_id, x.metric, x.ts, x.num, x.txt, x.flag) for x in got] == [
        (d, metric, ts, *cols(v)) for (d, metric), (ts, v) in sorted(newest.items())
    ]

    # a device's metric in buckets, from every source that can serve the bucket
    end = NOW - timedelta(hours=offset_h)
    start = end - timedelta(hours=span_h)
    a, b = q.floor_to(start, bucket), q.ceil_to(end, bucket)
    for dev, metric in [("d0", "temp"), ("d1", "door")]:
        ref: dict[datetime, list[Any]] = defaultdict(list)
        for ts, d, m, v in rows:
            if d == dev and m == metric and a <= ts < b:
                ref[q.floor_to(ts, bucket)].append(v)
        sources: list[q.Source] = ["raw"]
        if bucket % q.HOUR == timedelta(0):
            sources.append("hourly")
        if bucket % q.DAY == timedelta(0):
            sources.append("daily")
        for src in sources:
            _, buckets = await q.metric_series(conn, dev, metric, start, end, bucket, source=src)
            assert [x.start for x in buckets] == sorted(ref), src
            for x in buckets:
                vs = ref[x.start]
                nums = [v for v in vs if isinstance(v, float)]
                assert (x.n, x.nnum, x.ntrue) == (len(vs), len(nums), sum(v is True for v in vs))
                if nums:
                    assert x.total == pytest.approx(sum(nums), rel=1e-9, abs=1e-6)
                    assert (x.vmin, x.vmax) == (min(nums), max(nums))
                else:
                    assert x.total is None and x.vmin is None

    # events of community c1, all and by type
    for typ in (None, "fire"):
        got_e = await q.events_by_community(
            conn, "c1", start=NOW - timedelta(days=30), end=NOW + timedelta(days=1),
            event_type=typ, limit=1000,
        )  # fmt: skip
        ref_e = sorted(
            [
                (NOW - timedelta(minutes=m), d, t)
                for d, t, m in es
                if dict(DEVICES)[d] == "c1" and typ in (None, t)
            ],
            key=lambda e: (-e[0].timestamp(), e[1]),
        )
        assert [(e.ts, e.device_id, e.type) for e in got_e] == ref_e


def test_source_choice_and_alignment() -> None:
    t = datetime(2025, 3, 1, 10, 17, tzinfo=UTC)
    assert q.choose_source(t, t + timedelta(days=30), q.DAY) == "daily"
    assert q.choose_source(t, t + timedelta(days=2), q.DAY) == "hourly"
    assert q.choose_source(t, t + timedelta(hours=12), q.HOUR) == "hourly"
    assert q.choose_source(t, t + timedelta(hours=12), timedelta(minutes=5)) == "raw"
    assert q.floor_to(t, q.HOUR) == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert q.ceil_to(t, q.DAY) == datetime(2025, 3, 2, tzinfo=UTC)
    assert q.ceil_to(q.floor_to(t, q.DAY), q.DAY) == q.floor_to(t, q.DAY)
