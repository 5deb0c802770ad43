"""``anju bench ingest``: end-to-end ingest, bare COPY, lag at half load, queries at 10M readings.

Everything runs here: a private PostgreSQL (or the server given by ``--db``) and Mosquitto
(anju.servers), simulated gateways in a separate process (paho-mqtt, QoS 1, pre-encoded uplink
batches), and the backend's ingest path in this process: an aiomqtt subscriber feeding
``Ingest.submit`` and ``Ingest.run`` committing with COPY and publishing the acknowledgements
(the real backend's path minus the rules and the API).

With ``--db URL`` the figures are those of that server, in whichever storage mode its database
has (migrated first, ``auto``); ``timescaledb`` says which. The bench writes its rows into that
database (gateways and devices named ``gw-*`` / ``h-d*``, tagged per run so that a second run
is not taken for redelivery): give it a database for measuring, not a production one.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg

from anju.now import now_ms
from anju.servers import PrivateMosquitto, PrivatePostgres
from anju.uplink import (
    UP_SUBSCRIPTION,
    Record,
    ack_topic,
    decode_batch,
    encode_ack,
    encode_batch,
    record_body,
    up_topic,
)
from backend import queries as q
from backend.db.maintenance import maintain_once, rematerialise
from backend.db.migrate import StorageMode, migrate
from backend.db.rows import build_rows
from backend.ingest import READINGS_COPY, READINGS_TYPES, Ingest
from backend.metrics import BackendMetrics

METRICS = 10  # readings per telemetry record (an elevator reports 13)
RECS_PER_BATCH = 100


class _Gateways:
    """Simulated gateways' uplink batches: round robin, each gateway's sequence continuing."""

    def __init__(self, gateways: int, tag: str) -> None:
        self.ids = [f"gw-{tag}-{g:03d}" for g in range(gateways)]
        self.seq = [0] * gateways
        self.i = 0

    def batch(self, t_ms: int) -> tuple[str, bytes]:
        g = self.i % len(self.ids)
        self.i += 1
        gw = self.ids[g]
        rows = []
        for _ in range(RECS_PER_BATCH):
            self.seq[g] += 1
            s = self.seq[g]
            body = record_body(
                device_id=f"{gw}-d{s % 20}",
                kind="t",
                ts=t_ms,
                rx=t_ms,
                gateway_timed=False,
                payload={"m": {f"m{k}": s * 0.5 + k for k in range(METRICS)}},
            )
            rows.append((s, "boot", body))
        return up_topic(gw), encode_batch(gw, rows)


def _payloads(n_batches: int, gateways: int, *, t0_ms: int, tag: str) -> list[tuple[str, bytes]]:
    gen = _Gateways(gateways, tag)
    return [gen.batch(t0_ms + i) for i in range(n_batches)]


def _publisher(port: int, n_batches: int, gateways: int, rate: float, tag: str, ready: Any) -> None:
    """A process of simulated gateways: publish n batches (rate batches/s, 0 = flat out)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{tag}")
    c.max_inflight_messages_set(200)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = now_ms()
    pre = _payloads(n_batches, gateways, t0_ms=t0, tag=tag) if rate == 0 else []
    gen = _Gateways(gateways, tag)
    ready.set()
    infos = []
    start = time.monotonic()
    for i in range(n_batches):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            topic, payload = gen.batch(now_ms())
        else:
            topic, payload = pre[i]
        infos.append(c.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    c.loop_stop()
    c.disconnect()


class _Sink:
    def __init__(self) -> None:
        self.readings = 0
        self.last_commit = 0.0
        self.lags: list[float] = []
        self.measure_lag = False

    async def on_committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        now = time.time()
        self.readings += sum(len(r.metrics or {}) for r in new)
        self.last_commit = time.monotonic()
        if self.measure_lag:
            self.lags.extend(now - r.ts / 1000 for r in new)


async def _ingest_phase(
    pg_url: str, port: int, n_batches: int, gateways: int, rate: float, tag: str
) -> tuple[float, _Sink]:
    """Run the ingest path while a publisher process sends; return (readings/s, sink)."""
    ingest = Ingest(
        pg_url, BackendMetrics(), queue_max=2_000, batch_max_records=2_000,
        batch_wait_ms=20, telemetry_wait_ms=600_000,
    )  # fmt: skip
    sink = _Sink()
    sink.measure_lag = rate > 0
    expected = n_batches * RECS_PER_BATCH * METRICS
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-backend-{tag}") as client:
        await client.subscribe(UP_SUBSCRIPTION, qos=1)

        async def on_committed(new: list[Record], acks: dict[str, list[int]]) -> None:
            await sink.on_committed(new, acks)
            # concurrently: one PUBACK round trip per flush, not one per gateway
            await asyncio.gather(
                *(client.publish(ack_topic(gw), encode_ack(s), qos=1) for gw, s in acks.items())
            )

        async def receive() -> None:
            async for msg in client.messages:
                assert isinstance(msg.payload, bytes)
                await ingest.submit(msg.topic.value, msg.payload)

        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=_publisher, args=(port, n_batches, gateways, rate, tag, ready))
        proc.start()
        await asyncio.to_thread(ready.wait, 120)
        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(receive(), name="bench-receive"),
                tg.create_task(ingest.run(on_committed), name="bench-ingest"),
            ]
            while sink.readings < expected:
                await asyncio.sleep(0.02)
                if time.monotonic() - started > 600:
                    raise RuntimeError(f"ingest stalled at {sink.readings} of {expected}")
            for t in tasks:
                t.cancel()
        await asyncio.to_thread(proc.join, 30)
    return sink.readings / (sink.last_commit - started), sink


def _worker(
    pg_url: str, port: int, tag: str, i: int, readings: Any, last: Any, ready: Any, stop: Any
) -> None:
    """One backend worker's ingest path (issue 11) in a process of its own, on the shared
    subscription: readings committed added to ``readings``, the time of its last commit in
    ``last`` (monotonic, the same clock in every process)."""

    async def main() -> None:
        ingest = Ingest(
            pg_url, BackendMetrics(), queue_max=2_000, batch_max_records=2_000,
            batch_wait_ms=20, telemetry_wait_ms=600_000,
        )  # fmt: skip
        ident = f"bench-backend-{tag}-{i}"
        async with aiomqtt.Client("127.0.0.1", port, identifier=ident) as client:
            await client.subscribe(f"$share/bench/{UP_SUBSCRIPTION}", qos=1)

            async def on_committed(new: list[Record], acks: dict[str, list[int]]) -> None:
                n = sum(len(r.metrics or {}) for r in new)
                with readings.get_lock():
                    readings.value += n
                with last.get_lock():
                    last.value = max(last.value, time.monotonic())
                await asyncio.gather(
                    *(client.publish(ack_topic(gw), encode_ack(s), qos=1) for gw, s in acks.items())
                )

            async def receive() -> None:
                async for msg in client.messages:
                    assert isinstance(msg.payload, bytes)
                    await ingest.submit(msg.topic.value, msg.payload)

            ready.set()
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(receive(), name="bench-receive"),
                    tg.create_task(ingest.run(on_committed), name="bench-ingest"),
                ]
                await asyncio.to_thread(stop.wait)
                for t in tasks:
                    t.cancel()

    asyncio.run(main())


async def _workers_phase(
    pg_url: str, port: int, n_batches: int, gateways: int, tag: str, workers: int
) -> float:
    """The ingest path in ``workers`` processes behind a shared subscription (Mosquitto's
    round robin: one gateway's batches spread over every worker, their ``ingest_seen`` rows
    locked in turn); readings/s committed in all."""
    ctx = mp.get_context("spawn")
    readings, last, stop = ctx.Value("q", 0), ctx.Value("d", 0.0), ctx.Event()
    readies = [ctx.Event() for _ in range(workers)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(pg_url, port, tag, i, readings, last, readies[i], stop),
            name=f"bench-worker-{i}",
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        for r in readies:
            if not await asyncio.to_thread(r.wait, 120):
                raise RuntimeError("a bench worker did not subscribe within 120 s")
        ready = ctx.Event()
        pub = ctx.Process(target=_publisher, args=(port, n_batches, gateways, 0, tag, ready))
        pub.start()
        await asyncio.to_thread(ready.wait, 120)
        started = time.monotonic()
        expected = n_batches * RECS_PER_BATCH * METRICS
        while readings.value < expected:
            await asyncio.sleep(0.02)
            if time.monotonic() - started > 600:
                raise RuntimeError(f"ingest stalled at {readings.value} of {expected}")
        await asyncio.to_thread(pub.join, 30)
        return float(readings.value) / (float(last.value) - started)
    finally:
        stop.set()
        for p in procs:
            await asyncio.to_thread(p.join, 30)
            if p.is_alive():
                p.terminate()


async def _receive_only(port: int, n_batches: int, gateways: int) -> float:
    """aiomqtt alone: how fast this process receives the same batches (decoding them)."""
    got = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-recv-only") as client:
        await client.subscribe(UP_SUBSCRIPTION, qos=1)
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=_publisher, args=(port, n_batches, gateways, 0, "r", ready))
        proc.start()
        await asyncio.to_thread(ready.wait, 120)
        started = time.monotonic()
        async for msg in client.messages:
            assert isinstance(msg.payload, bytes)
            decode_batch(msg.topic.value, msg.payload)
            got += 1
            if got == n_batches:
                break
        elapsed = time.monotonic() - started
        await asyncio.to_thread(proc.join, 30)
    return n_batches * RECS_PER_BATCH * METRICS / elapsed


async def _bare_copy(pg_url: str, n_batches: int, gateways: int) -> float:
    """The same rows, pre-built, by binary COPY from Python in 20,000-row transactions."""
    payloads = _payloads(n_batches, gateways, t0_ms=now_ms(), tag="copy")
    rows = []
    for topic, payload in payloads:
        rows.extend(build_rows(decode_batch(topic, payload)[1]).readings)
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        started = time.monotonic()
        for i in range(0, len(rows), 20_000):
            async with conn.transaction(), conn.cursor().copy(READINGS_COPY) as cp:
                cp.set_types(READINGS_TYPES)
                for row in rows[i : i + 20_000]:
                    await cp.write_row(row)
        return len(rows) / (time.monotonic() - started)


async def _load_history(pg_url: str, n: int, mode: StorageMode) -> dict[str, Any]:
    """n readings over the last 30 days for 2,000 devices in 100 communities, by COPY; events;
    the registry; then maintenance materialises the rollups (plain) or refreshes the
    continuous aggregates (TimescaleDB), as it does for any late data."""
    devices, per_com, metrics = 2_000, 20, 5
    now = datetime.now(UTC)
    span = timedelta(days=30)
    per_pair = max(1, n // (devices * metrics))
    step = span / per_pair
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        # added to the registry, not replacing it (a database given with --db keeps its own)
        await conn.execute(
            "INSERT INTO device_registry SELECT 'h-d' || lpad(d::text, 4, '0'),"
            " 'h-c' || lpad((d / %s)::text, 3, '0'), 'x' FROM generate_series(0, %s) d"
            " ON CONFLICT (device_id) DO NOTHING",
            (per_com, devices - 1),
        )
        wm = q.floor_to(now - span, q.DAY)
        fresh = mode is StorageMode.PLAIN and await _plain_history_room(conn, now, span, wm)
        for i in range(per_pair):
            t = now - span + step * i
            async with conn.transaction(), conn.cursor().copy(READINGS_COPY) as cp:
                cp.set_types(READINGS_TYPES)
                for d in range(devices):
                    dev = f"h-d{d:04d}"
                    for m in range(metrics):
                        await cp.write_row((t, dev, f"m{m}", float(i % 97), None, None, False))
        await conn.execute(
            "INSERT INTO device_metrics SELECT 'h-d' || lpad(d::text, 4, '0'), 'm' || m"
            " FROM generate_series(0, %s) d, generate_series(0, %s) m ON CONFLICT DO NOTHING",
            (devices - 1, metrics - 1),
        )
        await conn.execute(
            "INSERT INTO events (ts, device_id, type, data, gateway_id, boot_id, seq)"
            " SELECT %s - random() * interval '30 days', 'h-d' || lpad((g % %s)::text, 4, '0'),"
            " (ARRAY['fire', 'trap', 'tamper'])[1 + g %% 3], '{}', 'gw', 'b', g"
            " FROM generate_series(1, %s) g".replace("%s - random", "%(now)s - random")
            .replace("(g % %s)", "(g %% %(dev)s)")
            .replace("(1, %s)", "(1, %(ev)s)"),
            {"now": now, "dev": devices, "ev": n // 50},
        )
        await conn.execute("VACUUM ANALYZE readings")
        await conn.execute("VACUUM ANALYZE events")
        if mode is StorageMode.PLAIN and not fresh:
            await rematerialise(conn, wm)  # history below rollups made by earlier runs
        while (await maintain_once(conn, max_hours=24 * 31)).hours_materialised:
            pass
        if mode is StorageMode.PLAIN:
            await conn.execute("ANALYZE readings_hourly_mat")
            await conn.execute("ANALYZE readings_daily_mat")
        else:  # the continuous aggregates' materialisation hypertables
            cur = await conn.execute(
                "SELECT format('%I.%I', materialization_hypertable_schema,"
                " materialization_hypertable_name)"
                " FROM timescaledb_information.continuous_aggregates"
            )
            for (rel,) in await cur.fetchall():
                await conn.execute(f"ANALYZE {rel}".encode())
        total = await (await conn.execute("SELECT count(*) FROM readings")).fetchone()
    return {"now": now, "stored": int(total[0]) if total else 0}


async def _plain_history_room(
    conn: psycopg.AsyncConnection, now: datetime, span: timedelta, wm: datetime
) -> bool:
    """Partitions for the history; on an empty rollup, the watermark moved back to its start
    (nothing below it to recompute: True). Else False: the caller recomputes the rollups over
    the history once loaded."""
    await conn.execute(
        "SELECT anju_ensure_partitions('readings', 'day', %s, %s)", (now - span, now)
    )
    await conn.execute(
        "SELECT anju_ensure_partitions('events', 'month', %s, %s)", (now - span, now)
    )
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM readings_hourly_mat)")
    row = await cur.fetchone()
    if row and row[0]:
        return False
    await conn.execute("UPDATE rollup_watermark SET until = %s, dirty_from = %s", (wm, wm))
    return True


async def _time_queries(pg_url: str, now: datetime) -> dict[str, float]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "latest_community": lambda: q.latest_state(conn, "h-c042", now=now),
            "series_day_5min_raw": lambda: q.metric_series(
                conn, "h-d0777", "m2", now - q.DAY, now, timedelta(minutes=5)
            ),
            "series_week_hourly": lambda: q.metric_series(
                conn, "h-d0777", "m2", now - 7 * q.DAY, now, q.HOUR
            ),
            "series_month_daily": lambda: q.metric_series(
                conn, "h-d0777", "m2", now - 30 * q.DAY, now, q.DAY
            ),
            "events_community_type": lambda: q.events_by_community(
                conn, "h-c042", start=now - 30 * q.DAY, end=now, event_type="fire", limit=100
            ),
        }
        out = {}
        for name, fn in cases.items():
            times = []
            for _ in range(7):
                t = time.perf_counter()
                await fn()
                times.append((time.perf_counter() - t) * 1000)
            out[name] = round(statistics.median(times[2:]), 2)  # warm
    return out


async def _storage(url: str) -> tuple[StorageMode, str | None]:
    """The database's storage mode, and the TimescaleDB version installed in it."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT (SELECT mode FROM anju_storage),"
            " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
        )
        row = await cur.fetchone()
    assert row is not None and row[0] is not None
    return StorageMode(row[0]), row[1]


async def _main(quick: bool, db: str | None, workers: int = 1) -> dict[str, Any]:
    n_batches = 120 if quick else 3_000
    gateways = 20 if quick else 300
    history = 200_000 if quick else 10_000_000
    run_tag = secrets.token_hex(3)  # a second run on the same database is new data
    with tempfile.TemporaryDirectory(prefix="anju-bench-") as tmp:
        pg = None if db else PrivatePostgres(Path(tmp) / "pg").start()
        broker = PrivateMosquitto(Path(tmp) / "mqtt").start()
        try:
            url = db or (pg.url() if pg else "")
            migrate(url)
            mode, ts_version = await _storage(url)
            if workers > 1:
                rate = await _workers_phase(
                    url, broker.port, n_batches, gateways, f"max{run_tag}", workers
                )
            else:
                tag = f"max{run_tag}"
                rate, _ = await _ingest_phase(url, broker.port, n_batches, gateways, 0, tag)
            recv = await _receive_only(broker.port, n_batches, gateways)
            bare = await _bare_copy(url, n_batches, gateways)
            half_batches_per_s = rate / 2 / (RECS_PER_BATCH * METRICS)
            n_half = max(20, int(half_batches_per_s * (3 if quick else 15)))
            _, sink = await _ingest_phase(
                url, broker.port, n_half, 1, half_batches_per_s, f"half{run_tag}"
            )
            lags = sorted(sink.lags)
            hist = await _load_history(url, history, mode)
            qms = await _time_queries(url, hist["now"])
        finally:
            broker.stop()
            if pg is not None:
                pg.destroy()
    return {
        "ingest_readings_per_s": round(rate),
        "bare_copy_rows_per_s": round(bare),
        "ratio": round(rate / bare, 3),
        "lag_p50_ms": round(lags[len(lags) // 2] * 1000, 1),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 1),
        "query_ms": qms,
        "timescaledb": mode is StorageMode.TIMESCALE,
        "timescaledb_version": ts_version,
        "server": "given" if db else "private",
        "mqtt_receive_decode_readings_per_s": round(recv),
        "readings_stored_for_queries": hist["stored"],
        "half_load_readings_per_s": round(rate / 2),
        "workers": workers,
    }


def run(*, quick: bool, db: str | None = None, workers: int = 1) -> dict[str, Any]:
    """The figures; ``db``: measure that database's server instead of a private one;
    ``workers``: the end-to-end ingest rate with that many ingest processes behind a shared
    subscription (issue 11; the other figures are one process's)."""
    return asyncio.run(_main(quick, db, workers))
