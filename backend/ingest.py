"""Ingest: uplink batches -> bounded queue -> COPY into PostgreSQL -> acknowledgements.

Duplicates are dropped by (gateway, boot, seq) in the same transaction that stores the rows
(``ingest_records``'s primary key), so a redelivered record is never written twice. A gateway
is acknowledged only after the commit. When the database is away the writer keeps the flush in
hand and retries with backoff; the queue fills, the MQTT reader waits on it, and the gateways
keep their records until the database is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from anju.backoff import backoff
from anju.uplink import Record, UplinkDecodeError, decode_batch
from backend.metrics import BackendMetrics

log = logging.getLogger("anju.ingest")

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS stage_rec (gateway_id text, boot_id text, seq bigint)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_readings (
    ts timestamptz, device_id text, metric text, num float8, txt text, flag bool, gw_timed bool,
    gateway_id text, boot_id text, seq bigint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_events (
    ts timestamptz, device_id text, type text, data jsonb, gw_timed bool,
    gateway_id text, boot_id text, seq bigint) ON COMMIT DELETE ROWS;
"""

_MERGE = """
WITH n AS (
    INSERT INTO ingest_records (gateway_id, boot_id, seq)
    SELECT gateway_id, boot_id, seq FROM stage_rec
    ON CONFLICT DO NOTHING
    RETURNING gateway_id, boot_id, seq
), r AS (
    INSERT INTO readings (ts, device_id, metric, num, txt, flag, gw_timed)
    SELECT s.ts, s.device_id, s.metric, s.num, s.txt, s.flag, s.gw_timed
    FROM stage_readings s JOIN n USING (gateway_id, boot_id, seq)
), e AS (
    INSERT INTO events (ts, device_id, type, data, gw_timed, gateway_id, boot_id, seq)
    SELECT s.ts, s.device_id, s.type, s.data, s.gw_timed, s.gateway_id, s.boot_id, s.seq
    FROM stage_events s JOIN n USING (gateway_id, boot_id, seq)
)
SELECT gateway_id, boot_id, seq FROM n
"""


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(slots=True)
class Flush:
    """Records gathered for one transaction (duplicates within it removed)."""

    records: list[Record] = field(default_factory=list)
    keys: set[tuple[str, str, int]] = field(default_factory=set)
    acks: dict[str, list[int]] = field(default_factory=dict)
    has_events: bool = False

    def add(self, records: list[Record]) -> None:
        for r in records:
            self.acks.setdefault(r.gateway_id, []).append(r.seq)
            key = (r.gateway_id, r.boot_id, r.seq)
            if key in self.keys:
                continue
            self.keys.add(key)
            self.records.append(r)
            if r.kind != "t":
                self.has_events = True


OnCommitted = Callable[[list[Record], dict[str, list[int]]], Awaitable[None]]


class Ingest:
    def __init__(
        self,
        conninfo: str,
        metrics: BackendMetrics,
        *,
        queue_max: int = 2_000,
        batch_max_records: int = 5_000,
        batch_wait_ms: int = 20,
    ) -> None:
        self.conninfo = conninfo
        self.metrics = metrics
        self.queue: asyncio.Queue[list[Record]] = asyncio.Queue(queue_max)
        self.batch_max = batch_max_records
        self.batch_wait = batch_wait_ms / 1000
        self._conn: psycopg.AsyncConnection | None = None

    async def submit(self, topic: str, payload: bytes) -> None:
        """Decode one uplink message and queue it (waits when the queue is full)."""
        try:
            _gw, records = decode_batch(topic, payload)
        except UplinkDecodeError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            log.warning("rejected an uplink batch on %s: %s", topic, exc)
            return
        self.metrics.batches.inc()
        if records:
            await self.queue.put(records)
            self.metrics.queue_depth.set(self.queue.qsize())

    async def _gather(self) -> Flush:
        flush = Flush()
        flush.add(await self.queue.get())
        deadline = time.monotonic() + self.batch_wait
        while len(flush.records) < self.batch_max and not flush.has_events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                flush.add(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        # Whatever else is already waiting goes in too, without waiting longer.
        while len(flush.records) < self.batch_max and not self.queue.empty():
            flush.add(self.queue.get_nowait())
        self.metrics.queue_depth.set(self.queue.qsize())
        return flush

    async def run(self, on_committed: OnCommitted) -> None:
        """The writer loop: gather, commit (retrying until it succeeds), then hand on."""
        try:
            while True:
                flush = await self._gather()
                new = await self._commit_with_retry(flush)
                self.metrics.duplicates.inc(len(flush.records) - len(new))
                await on_committed(new, flush.acks)
        finally:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.conninfo)
            await self._conn.execute(_STAGE)
            await self._conn.commit()
        return self._conn

    async def _commit_with_retry(self, flush: Flush) -> list[Record]:
        delays = backoff(0.2, 5.0)
        while True:
            try:
                return await self._commit(flush)
            except psycopg.OperationalError as exc:
                self.metrics.db_errors.inc()
                delay = next(delays)
                log.warning("database unavailable (%s); retrying in %.1f s", exc, delay)
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                await asyncio.sleep(delay)

    async def _commit(self, flush: Flush) -> list[Record]:
        conn = await self._connection()
        started = time.perf_counter()
        async with conn.transaction():
            cur = conn.cursor()
            async with cur.copy("COPY stage_rec (gateway_id, boot_id, seq) FROM STDIN") as cp:
                for r in flush.records:
                    await cp.write_row((r.gateway_id, r.boot_id, r.seq))
            async with cur.copy(
                "COPY stage_readings (ts, device_id, metric, num, txt, flag, gw_timed,"
                " gateway_id, boot_id, seq) FROM STDIN"
            ) as cp:
                for r in flush.records:
                    if r.kind != "t" or not r.metrics:
                        continue
                    ts = _dt(r.ts)
                    for name, v in r.metrics.items():
                        num = txt = flag = None
                        if isinstance(v, bool):
                            flag = v
                        elif isinstance(v, int | float):
                            num = float(v)
                        else:
                            txt = str(v)
                        await cp.write_row(
                            (
                                ts,
                                r.device_id,
                                name,
                                num,
                                txt,
                                flag,
                                r.gateway_timed,
                                r.gateway_id,
                                r.boot_id,
                                r.seq,
                            )
                        )
            async with cur.copy(
                "COPY stage_events (ts, device_id, type, data, gw_timed, gateway_id, boot_id,"
                " seq) FROM STDIN"
            ) as cp:
                for r in flush.records:
                    if r.kind == "e":
                        await cp.write_row(
                            (
                                _dt(r.ts),
                                r.device_id,
                                r.event_type,
                                json.dumps(r.data or {}),
                                r.gateway_timed,
                                r.gateway_id,
                                r.boot_id,
                                r.seq,
                            )
                        )
            await cur.execute(_MERGE)
            new_keys = {(g, b, int(s)) for g, b, s in await cur.fetchall()}
            new = [r for r in flush.records if (r.gateway_id, r.boot_id, r.seq) in new_keys]
            statuses = [
                (
                    r.device_id,
                    bool((r.status or {}).get("online")),
                    (r.status or {}).get("fw"),
                    (r.status or {}).get("battery_pct"),
                    _dt(r.rx),
                )
                for r in new
                if r.kind == "s"
            ]
            if statuses:
                await cur.executemany(
                    "INSERT INTO device_status (device_id, online, fw, battery_pct, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
                    " online = excluded.online, fw = coalesce(excluded.fw, device_status.fw),"
                    " battery_pct = coalesce(excluded.battery_pct, device_status.battery_pct),"
                    " updated_at = excluded.updated_at"
                    " WHERE device_status.updated_at <= excluded.updated_at",
                    statuses,
                )
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        for r in new:
            self.metrics.records.labels(r.kind).inc()
        return new
