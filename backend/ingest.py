"""Ingest: uplink batches -> two bounded lanes -> COPY into PostgreSQL -> acknowledgements.

Each uplink batch is split by kind into two lanes, each with its own bounded queue, writer task
and database connection: events and statuses (the fast lane, small transactions, never behind
telemetry) and telemetry (large COPY transactions). A writer gathers what is queued (up to
``batch_max_records`` records or ``batch_wait_ms``), and in one transaction:

1. locks its lane's ``ingest_seen`` rows of the (gateway, boot) pairs in the flush and drops the
   records whose sequence number is already in their ranges (one read per flush, no per-row
   lookup);
2. COPYs the new readings (binary) or events;
3. adds the new sequence numbers to the ranges (and, on plain PostgreSQL, marks late readings'
   hours dirty for the rollups);
4. commits; only then are the records handed on (rules) and the gateways acknowledged.

Overflow policy. Event lane: ``submit`` waits for room (back-pressure to the MQTT reader; it is
full only while the database is away). Telemetry lane: ``submit`` waits up to
``telemetry_wait_ms`` for room, then sheds that batch's telemetry, unacknowledged and counted in
``anju_ingest_shed_total{lane="telemetry"}``: the gateway still holds it and sends it again, and
the reader stays free for the events behind it.

The database going away: the writer keeps its flush, reconnects and retries with backoff;
nothing is acknowledged meanwhile. A flush the database refuses for its content is split in
halves until the refused record is found; that record is rejected (counted, marked seen and
acknowledged, so that it is not sent forever) and the rest is stored.

Poison input ends (issue 10). Batches are decoded record by record into the canonical form
(``anju.uplink.decode_parts``); a record without one, a record for a device that the registry
gives to another gateway, and a record the database refuses are counted
(``anju_ingest_rejected_total{reason}``) and kept in ``dead_letters`` (``backend.deadletters``)
by the telemetry lane's writer, in the same transaction as the flush they came with; those
whose sequence number could be read are acknowledged with it, so the gateway stops sending
them. A batch that cannot be attributed at all is dead-lettered without acknowledging
anything.

Evaluated exactly once. The telemetry lane's records are marked evaluated
(``ingest_evaluated``) in the transaction that stores the rule state of their evaluation
(``backend.alerting.feed.StateWriter``). A record the gateway sends again that is committed
(in ``ingest_seen``) but not evaluated (a backend killed between its commit and its rules)
goes to the rules although it is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from anju.backoff import backoff
from anju.uplink import Record, UplinkDecodeError, decode_parts
from backend.db.migrate import StorageMode
from backend.db.rows import Rows, build_rows, dt
from backend.db.seqset import GapTracker, SeqSet, runs
from backend.deadletters import DeadLetter
from backend.deadletters import store as store_dead_letters
from backend.metrics import BackendMetrics

log = logging.getLogger("anju.ingest")

OnCommitted = Callable[[list[Record], dict[str, list[int]]], Awaitable[None]]
EarlyAck = Callable[[dict[str, list[int]]], Awaitable[None]]
Item = Record | DeadLetter

READINGS_COPY = (
    "COPY readings (ts, device_id, metric, num, txt, flag, gw_timed) FROM STDIN (FORMAT BINARY)"
)
READINGS_TYPES = ["timestamptz", "text", "text", "float8", "text", "bool", "bool"]
_EVENTS_INSERT = (
    "INSERT INTO events (ts, device_id, type, data, gateway_id, boot_id, seq, gw_timed)"
    " SELECT ts, d, ty, da::jsonb, g, b, s, gt FROM unnest(%s::timestamptz[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::text[], %s::int8[], %s::bool[])"
    " AS t(ts, d, ty, da, g, b, s, gt)"
)
_KNOWN_PAIRS_MAX = 2_000_000


@dataclass(slots=True)
class Flush:
    """Records gathered for one transaction (duplicates within it removed)."""

    records: list[Record] = field(default_factory=list)
    keys: set[tuple[str, str, int]] = field(default_factory=set)
    acks: dict[str, list[int]] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)  # stored with the first half

    def add(self, records: list[Item]) -> None:
        for r in records:
            if isinstance(r, DeadLetter):
                self.dead.append(r)
                if r.seq is not None and r.gateway_id is not None:
                    self.acks.setdefault(r.gateway_id, []).append(r.seq)
                continue
            self.acks.setdefault(r.gateway_id, []).append(r.seq)
            key = (r.gateway_id, r.boot_id, r.seq)
            if key in self.keys:
                continue
            self.keys.add(key)
            self.records.append(r)

    def split(self) -> tuple[Flush, Flush]:
        half = len(self.records) // 2
        a, b = Flush(), Flush()
        a.add([*self.dead, *self.records[:half]])
        b.add(list(self.records[half:]))
        return a, b


@dataclass(slots=True)
class Lane:
    name: str  # "t" telemetry, "e" events and statuses
    queue: asyncio.Queue[list[Item]]
    batch_max: int
    wait_s: float
    # Records of the current flush that the database refused (not for the rules).
    refused: set[tuple[str, str, int]] = field(default_factory=set)
    # Duplicates of the current flush committed earlier and never evaluated (to the rules).
    again: list[Record] = field(default_factory=list)
    busy: bool = False  # between taking a flush and handing it on
    closing: bool = False  # ``Ingest.stop_lane``: return after the flush in hand


class Ingest:
    def __init__(
        self,
        conninfo: str,
        metrics: BackendMetrics,
        *,
        queue_max: int = 2_000,
        batch_max_records: int = 5_000,
        batch_wait_ms: int = 20,
        event_queue_max: int = 1_000,
        event_batch_max_records: int = 500,
        telemetry_wait_ms: int = 500,
        device_gateway: Mapping[str, str] | None = None,
        broken: frozenset[str] = frozenset(),
    ) -> None:
        self.conninfo = conninfo
        # Guarantees broken on purpose (ANJU_BREAK; test only, docs/guarantees.md).
        self.broken = broken
        # The registry's gateway of each device: a gateway speaks for its own devices only
        # (a device not in the registry is stored, and not evaluated).
        self.device_gateway = device_gateway or {}
        self.metrics = metrics
        self.telemetry = Lane(
            "t", asyncio.Queue(queue_max), batch_max_records, batch_wait_ms / 1000
        )
        self.events = Lane("e", asyncio.Queue(event_queue_max), event_batch_max_records, 0.0)
        self.telemetry_wait = telemetry_wait_ms / 1000
        self.gaps = GapTracker()
        self._gaps_lock = threading.Lock()  # the two lanes' writers may run on two threads
        self._known_pairs: set[int] = set()
        self.mode: StorageMode | None = None
        # The loop whose writer takes the events lane, when it is not the caller's (the
        # backend's alarm lane runs it on a thread of its own).
        self.events_loop: asyncio.AbstractEventLoop | None = None
        self.telemetry_loop: asyncio.AbstractEventLoop | None = None  # likewise
        # The events lane's sequence ranges as committed, by (gateway, boot): this writer is
        # theirs alone, so after the first read it knows them without reading them again.
        self._seen_cache: dict[tuple[str, str], SeqSet] = {}
        self._cache_ok = False  # the events writer's session lock is held
        # Telemetry handed to the rules by this process, by (gateway, boot): a duplicate in
        # it is not evaluated again while its mark is on its way to ``ingest_evaluated``.
        self._handed: dict[tuple[str, str], SeqSet] = {}

    # ---- the MQTT side -------------------------------------------------------------------

    async def submit(self, topic: str, payload: bytes) -> None:
        """Decode one uplink message and queue its records by lane (see the overflow policy),
        and what it had that cannot be taken as dead letters. Never raises for its content."""
        try:
            decoded = decode_parts(topic, payload)
        except UplinkDecodeError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            log.warning("rejected an uplink batch on %r: %s", topic[:200], exc)
            await self._to_telemetry([DeadLetter.of_batch(topic, exc.reason, exc.detail, payload)])
            return
        self.metrics.batches.inc()
        gw = decoded.gateway_id
        dead = [DeadLetter.of_rejected(topic, gw, r) for r in decoded.rejected]
        records = decoded.records
        if self.device_gateway:
            mine = self.device_gateway
            foreign = [r for r in records if mine.get(r.device_id, gw) != gw]
            if foreign:
                records = [r for r in records if mine.get(r.device_id, gw) == gw]
                for r in foreign:
                    detail = f"{r.device_id} belongs to {mine[r.device_id]}, not {gw}"
                    dead.append(DeadLetter.of_record(topic, "foreign_device", detail, r))
        for d in dead:
            self.metrics.rejected.labels(d.reason).inc()
            log.warning(
                "rejected record %s/%s/%s on %s: %s: %s",
                gw,
                d.boot_id,
                d.seq,
                topic,
                d.reason,
                d.detail[:200],
            )
        tele: list[Item] = [r for r in records if r.kind == "t"]
        fast: list[Item] = (
            [r for r in records if r.kind != "t"] if len(tele) != len(records) else []
        )
        if "no_event_priority" in self.broken:  # ANJU_BREAK (test only): behind telemetry
            tele, fast = [*tele, *fast], []
        if fast:
            await self._put_fast(fast)
            self.metrics.queue_depth.labels("e").set(self.events.queue.qsize())
        tele.extend(dead)
        await self._to_telemetry(tele)

    async def _to_telemetry(self, tele: list[Item]) -> None:
        if tele:
            loop = self.telemetry_loop
            if loop is None or loop is asyncio.get_running_loop():
                await self._put_telemetry(tele)
            else:
                # Telemetry on the events topic (not what a gateway sends, but it is valid):
                # to the telemetry lane's loop, whose queue it is.
                put = asyncio.run_coroutine_threadsafe(self._put_telemetry(tele), loop)
                await asyncio.wrap_future(put)

    async def _put_telemetry(self, tele: list[Item]) -> None:
        try:
            self.telemetry.queue.put_nowait(tele)
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(self.telemetry.queue.put(tele), self.telemetry_wait)
            except TimeoutError:
                self.metrics.shed.labels("t").inc()
                return
        self.metrics.queue_depth.labels("t").set(self.telemetry.queue.qsize())

    async def _put_fast(self, records: list[Item]) -> None:
        loop = self.events_loop
        if loop is None or loop is asyncio.get_running_loop():
            await self.events.queue.put(records)
        else:
            # Waits for room like a local put (the queue belongs to the other loop).
            put = asyncio.run_coroutine_threadsafe(self.events.queue.put(records), loop)
            await asyncio.wrap_future(put)

    # ---- the writers ---------------------------------------------------------------------

    async def run(self, on_committed: OnCommitted) -> None:
        """The two lanes' writers, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.run_lane("e", on_committed), name="ingest-events")
            tg.create_task(self.run_lane("t", on_committed), name="ingest-telemetry")

    async def run_lane(
        self, lane: str, on_committed: OnCommitted, *, early_ack: EarlyAck | None = None
    ) -> None:
        """One lane's writer ("e": events and statuses, "t": telemetry), until cancelled or
        stopped (``stop_lane``). ``early_ack`` publishes acknowledgements; it is used only
        when ``ack_before_commit`` is broken on purpose (ANJU_BREAK, test only)."""
        await self._writer(self._lane(lane), on_committed, early_ack)

    def _lane(self, name: str) -> Lane:
        return self.events if name == "e" else self.telemetry

    async def stop_lane(self, name: str, task: asyncio.Task[None], within_s: float = 10) -> None:
        """Stop a lane's writer (running as ``task``) between flushes: waiting for its next
        flush, it is cancelled at once (what it gathered was not acknowledged: it comes
        again); in the middle of one, it first commits it and hands it on (records committed
        and not handed to the rules would come back as duplicates and never be evaluated),
        within ``within_s`` (the database may be away)."""
        lane = self._lane(name)
        lane.closing = True
        if not lane.busy:
            task.cancel()
        _done, pending = await asyncio.wait({task}, timeout=within_s)
        for t in pending:
            log.warning("lane %s did not finish its flush in %.0f s; cancelled", name, within_s)
            t.cancel()

    async def _gather(self, lane: Lane) -> Flush:
        flush = Flush()
        flush.add(await lane.queue.get())
        deadline = time.monotonic() + lane.wait_s
        while len(flush.records) < lane.batch_max:
            if not lane.queue.empty():
                flush.add(lane.queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                flush.add(await asyncio.wait_for(lane.queue.get(), remaining))
            except TimeoutError:
                break
        self.metrics.queue_depth.labels(lane.name).set(lane.queue.qsize())
        return flush

    async def _writer(
        self, lane: Lane, on_committed: OnCommitted, early_ack: EarlyAck | None = None
    ) -> None:
        conn: psycopg.AsyncConnection | None = None
        try:
            while not lane.closing:
                flush = await self._gather(lane)
                if "ack_before_commit" in self.broken and early_ack is not None:
                    await early_ack(flush.acks)  # ANJU_BREAK (test only): acked, not committed
                lane.busy = True
                lane.refused.clear()
                lane.again.clear()
                delays = backoff(0.2, 5.0)
                # A connection lost during a commit leaves its outcome unknown: if it did
                # commit, the retry sees the records as duplicates, yet the rules never saw
                # them. After such a loss the rules get the whole flush (they tolerate repeats).
                uncertain = False
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await self._connect(lane)
                        new = await self._commit_resilient(conn, lane, flush)
                        break
                    except psycopg.OperationalError as exc:
                        uncertain = True
                        self.metrics.db_errors.inc()
                        delay = next(delays)
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
                        log.warning(
                            "database unavailable (%s); lane %s retries in %.1f s",
                            first,
                            lane.name,
                            delay,
                        )
                        if conn is not None:
                            await conn.close()
                            conn = None
                        await asyncio.sleep(delay)
                self.metrics.duplicates.inc(len(flush.records) - len(new))
                to_rules = self._for_rules(lane, flush, new, uncertain=uncertain)
                if lane.name == "t":
                    to_rules = self._hand(to_rules)
                await on_committed(to_rules, flush.acks)
                lane.busy = False
        finally:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    @staticmethod
    def _for_rules(lane: Lane, flush: Flush, new: list[Record], *, uncertain: bool) -> list[Record]:
        """What the rules get after a commit: the new records; after a connection lost
        mid-commit, the whole flush (its outcome is unknown). And events come to the rules
        even as duplicates: an event that comes again was never acknowledged, so the rules
        may never have seen it (a backend that died between its commit and its rules). The
        rules tolerate a repeat (one open alert per device and type)."""
        if lane.name != "e":
            # (After a connection lost mid-commit, what did commit is among ``again``.)
            return new + lane.again
        if uncertain:
            return [r for r in flush.records if _key(r) not in lane.refused]
        fresh = {_key(r) for r in new}
        # A resent event is marked as such: the rules skip it when they have already seen
        # this gateway's later events of that device (engine, ``_EVENT_MARK``).
        return [
            r if _key(r) in fresh else replace(r, repeat=True)
            for r in flush.records
            if _key(r) in fresh or (r.kind == "e" and _key(r) not in lane.refused)
        ]

    async def _connect(self, lane: Lane) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self.conninfo)
        if self.mode is None:
            cur = await conn.execute("SELECT mode FROM anju_storage")
            row = await cur.fetchone()
            self.mode = StorageMode(row[0]) if row else StorageMode.PLAIN
            await conn.rollback()
            log.info("ingest writing to %s storage", self.mode)
        if lane.name == "e":
            # The events lane keeps its sequence ranges in memory only while it is the one
            # events writer on this database (a session lock, held as long as the connection).
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (_EVENTS_WRITER_LOCK,))
            row = await cur.fetchone()
            await conn.rollback()
            self._seen_cache.clear()
            self._cache_ok = bool(row and row[0])
            if not self._cache_ok:
                log.warning(
                    "another backend writes events to this database: the events lane reads"
                    " its sequence ranges at every flush"
                )
        return conn

    def _hand(self, records: list[Record]) -> list[Record]:
        """Telemetry records not handed to the rules by this process before, now handed."""
        out = []
        handed = self._handed
        if len(handed) > _SEEN_CACHE_MAX:
            handed.clear()
        for r in records:
            k = (r.gateway_id, r.boot_id)
            seqs = handed.get(k)
            if seqs is None:
                seqs = handed[k] = SeqSet()
            if r.seq in seqs:
                continue
            seqs.add_range(r.seq, r.seq + 1)
            out.append(r)
        return out

    def forget_seen(self) -> None:
        """Drop the events lane's ranges held in memory (call on its loop): after the
        uplink session was lost another backend may have taken the gateways meanwhile."""
        self._seen_cache.clear()

    async def _commit_resilient(
        self, conn: psycopg.AsyncConnection, lane: Lane, flush: Flush
    ) -> list[Record]:
        """Commit; when the database refuses the content, bisect to the refused records."""
        try:
            return await self._commit(conn, lane, flush)
        except psycopg.OperationalError:
            raise
        except (psycopg.Error, UnicodeError) as exc:  # (a lone surrogate fails in psycopg)
            if len(flush.records) <= 1:
                for r in flush.records:
                    log.error("database refused record %s/%s/%s: %s", *_key(r), exc)
                    self.metrics.rejected.labels("db_refused").inc()
                    lane.refused.add(_key(r))
                    topic = f"anju/gw/{r.gateway_id}/up"
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
                    flush.dead.append(DeadLetter.of_record(topic, "db_refused", detail, r))
                try:
                    await self._commit(conn, lane, flush, only_mark=True)
                except psycopg.OperationalError:
                    raise
                except (psycopg.Error, UnicodeError) as exc2:
                    # Not even its sequence number could be stored (e.g. out of range): it is
                    # acknowledged all the same, or it would be sent and refused forever.
                    log.error("could not mark the refused record seen: %s", exc2)
                return []
            a, b = flush.split()
            return await self._commit_resilient(conn, lane, a) + await self._commit_resilient(
                conn, lane, b
            )

    async def _commit(
        self, conn: psycopg.AsyncConnection, lane: Lane, flush: Flush, *, only_mark: bool = False
    ) -> list[Record]:
        started = time.perf_counter()
        try:
            async with contextlib.AsyncExitStack() as stack:
                if lane.name == "e":
                    # The fast lane in pipeline mode: one round trip to the database (two
                    # the first time a gateway's boot is seen: its ranges are read), instead
                    # of one per statement, each of which would also wait for its turn.
                    await stack.enter_async_context(conn.pipeline())
                rows, by_key, copy_done, again = await self._transaction(
                    conn, lane, flush, only_mark
                )
        except BaseException:
            if lane.name == "e":
                self._seen_cache.clear()  # the outcome may be unknown: read them again
            raise
        if lane.name == "e":
            for k, seqs in by_key.items():
                if k in self._seen_cache:
                    for lo, hi in runs(seqs):
                        self._seen_cache[k].add_range(lo, hi)
        lane.again.extend(again)
        finished = time.perf_counter()
        self._after_commit(lane, rows, by_key, copy_done - started, finished - started)
        return rows.stored

    async def _transaction(
        self, conn: psycopg.AsyncConnection, lane: Lane, flush: Flush, only_mark: bool
    ) -> tuple[Rows, dict[tuple[str, str], list[int]], float, list[Record]]:
        keys = sorted({(r.gateway_id, r.boot_id) for r in flush.records})
        gws, boots = [k[0] for k in keys], [k[1] for k in keys]
        async with conn.transaction():
            cur = conn.cursor()
            cache = self._seen_cache if lane.name == "e" and self._cache_ok else None
            await cur.execute(
                "INSERT INTO ingest_seen (gateway_id, boot_id, lane)"
                " SELECT g, b, %s FROM unnest(%s::text[], %s::text[]) AS t(g, b)"
                " ON CONFLICT DO NOTHING",
                (lane.name, gws, boots),
            )
            await cur.execute(
                "SELECT gateway_id, boot_id, seen FROM ingest_seen WHERE lane = %s AND"
                " (gateway_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                " ORDER BY gateway_id, boot_id FOR UPDATE",
                (lane.name, gws, boots),
            )
            if cache is not None and all(k in cache for k in keys):
                # The rows are locked all the same; their contents are what this writer
                # committed last (in pipeline mode: no round trip to read them).
                seen = {k: cache[k] for k in keys}
            else:
                seen = {
                    (g, b): SeqSet.of((rg.lower, rg.upper) for rg in mr)
                    for g, b, mr in await cur.fetchall()
                }
                if cache is not None:
                    if len(cache) > _SEEN_CACHE_MAX:
                        cache.clear()
                    cache.update(seen)
            if "skip_dedupe" in self.broken:  # ANJU_BREAK (test only): resent, stored again
                seen = {}
            empty = SeqSet()
            new = [
                r for r in flush.records if r.seq not in seen.get((r.gateway_id, r.boot_id), empty)
            ]
            again: list[Record] = []
            if lane.name == "t" and len(new) < len(flush.records) and not only_mark:
                again = await self._unevaluated(cur, flush.records, new)
            rows = Rows() if only_mark else await self._write(cur, lane, new)
            if flush.dead:
                await store_dead_letters(cur, flush.dead)
            if lane.name == "t":
                # Seen and never for the rules (refused, a time out of range): done with.
                done = rows.rejected if not only_mark else [r for r in new]
                if done:
                    await mark_evaluated(cur, "t", [(r.gateway_id, r.boot_id, r.seq) for r in done])
            copy_done = time.perf_counter()
            by_key: dict[tuple[str, str], list[int]] = {}
            for r in new:
                by_key.setdefault((r.gateway_id, r.boot_id), []).append(r.seq)
            ug: list[str] = []
            ub: list[str] = []
            ulo: list[int] = []
            uhi: list[int] = []
            for (g, b), seqs in by_key.items():
                for lo, hi in runs(seqs):
                    ug.append(g)
                    ub.append(b)
                    ulo.append(lo)
                    uhi.append(hi)
            if ug:
                await cur.execute(
                    "INSERT INTO ingest_seen AS s (gateway_id, boot_id, lane, seen)"
                    " SELECT g, b, %s, range_agg(int8range(lo, hi))"
                    " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[])"
                    " AS t(g, b, lo, hi) GROUP BY g, b"
                    " ON CONFLICT (gateway_id, boot_id, lane) DO UPDATE"
                    " SET seen = s.seen + excluded.seen, updated_at = now()",
                    (lane.name, ug, ub, ulo, uhi),
                )
        return rows, by_key, copy_done, again

    @staticmethod
    async def _unevaluated(
        cur: psycopg.AsyncCursor[tuple[Any, ...]], records: list[Record], new: list[Record]
    ) -> list[Record]:
        """The flush's duplicates that were committed and never evaluated."""
        fresh = {_key(r) for r in new}
        dups = [r for r in records if _key(r) not in fresh]
        keys = sorted({(r.gateway_id, r.boot_id) for r in dups})
        await cur.execute(
            "SELECT gateway_id, boot_id, evaluated FROM ingest_evaluated WHERE lane = 't' AND"
            " (gateway_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        done = {
            (g, b): SeqSet.of((rg.lower, rg.upper) for rg in mr)
            for g, b, mr in await cur.fetchall()
        }
        empty = SeqSet()
        return [r for r in dups if r.seq not in done.get((r.gateway_id, r.boot_id), empty)]

    async def _write(
        self, cur: psycopg.AsyncCursor[tuple[Any, ...]], lane: Lane, new: list[Record]
    ) -> Rows:
        dirty_before_ms: int | None = None
        if lane.name == "t" and self.mode is StorageMode.PLAIN:
            await cur.execute(
                "SELECT extract(epoch FROM dirty_from) * 1000 FROM rollup_watermark"
                " WHERE name = 'hourly' FOR SHARE"
            )
            row = await cur.fetchone()
            dirty_before_ms = int(row[0]) if row else None
        if len(new) > _INLINE_RECORDS:
            # Building a large flush's rows takes tens of milliseconds of pure Python: in a
            # thread, so that the event loop (alarms, acks, the API) keeps its turn.
            rows = await asyncio.to_thread(build_rows, new, dirty_before_ms=dirty_before_ms)
        else:
            rows = build_rows(new, dirty_before_ms=dirty_before_ms)
        if rows.readings:
            async with cur.copy(READINGS_COPY) as cp:
                cp.set_types(READINGS_TYPES)
                for i, reading in enumerate(rows.readings, 1):
                    await cp.write_row(reading)
                    if i % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let the loop run between chunks
            pairs = [p for p in rows.pairs if hash(p) not in self._known_pairs]
            if pairs:
                await cur.execute(
                    "INSERT INTO device_metrics SELECT * FROM unnest(%s::text[], %s::text[])"
                    " ON CONFLICT DO NOTHING",
                    ([p[0] for p in pairs], [p[1] for p in pairs]),
                )
        if rows.dirty:
            await cur.execute(
                "INSERT INTO rollup_dirty (bucket, device_id)"
                " SELECT * FROM unnest(%s::timestamptz[], %s::text[]) ON CONFLICT DO NOTHING",
                ([dt(h) for h, _ in rows.dirty], [d for _, d in rows.dirty]),
            )
        if rows.events:
            # An INSERT, not a COPY: it can be pipelined (the fast lane; flushes are small).
            await cur.execute(_EVENTS_INSERT, [list(c) for c in zip(*rows.events, strict=True)])
        if rows.statuses:
            await cur.executemany(
                "INSERT INTO device_status (device_id, online, fw, battery_pct, updated_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device_id) DO UPDATE SET"
                " online = excluded.online, fw = coalesce(excluded.fw, device_status.fw),"
                " battery_pct = coalesce(excluded.battery_pct, device_status.battery_pct),"
                " updated_at = excluded.updated_at"
                " WHERE device_status.updated_at <= excluded.updated_at",
                rows.statuses,
            )
        if rows.rejected:
            for r in rows.rejected:
                log.warning("record %s/%s/%s has a time out of range; rejected", *_key(r))
            self.metrics.rejected.labels("bad_time").inc(len(rows.rejected))
            await store_dead_letters(
                cur,
                [
                    DeadLetter.of_record(
                        f"anju/gw/{r.gateway_id}/up", "bad_time", "time out of range", r
                    )
                    for r in rows.rejected
                ],
            )
        return rows

    def _after_commit(
        self,
        lane: Lane,
        rows: Rows,
        by_key: dict[tuple[str, str], list[int]],
        copy_s: float,
        commit_s: float,
    ) -> None:
        m = self.metrics
        m.flushes.labels(lane.name).inc()
        m.copy_seconds.labels(lane.name).observe(copy_s)
        m.commit_seconds.labels(lane.name).observe(commit_s)
        m.readings.inc(len(rows.readings))
        for r in rows.stored:
            m.records.labels(r.kind).inc()
        if len(self._known_pairs) > _KNOWN_PAIRS_MAX:
            self._known_pairs.clear()
        self._known_pairs.update(hash(p) for p in rows.pairs)
        if rows.newest_ms is not None:
            m.lag.set(max(0.0, time.time() - rows.newest_ms / 1000))
        with self._gaps_lock:
            for (g, b), seqs in by_key.items():
                opened = self.gaps.add(g, b, seqs)
                if opened:
                    m.gaps.inc(opened)
            m.seq_missing.set(self.gaps.total_missing)


_SEEN_CACHE_MAX = 100_000  # (gateway, boot) pairs
_EVENTS_WRITER_LOCK = 0x616E6A65  # "anje"
_INLINE_RECORDS = 200  # smaller flushes build their rows on the loop: a thread costs more
_YIELD_EVERY = 1_000  # COPY rows written between two turns of the event loop


def _key(r: Record) -> tuple[str, str, int]:
    return r.gateway_id, r.boot_id, r.seq


async def mark_evaluated(
    cur: psycopg.AsyncCursor[Any], lane: str, keys: list[tuple[str, str, int]]
) -> None:
    """Add (gateway, boot, seq)s to ``ingest_evaluated`` (in the caller's transaction)."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for g, b, seq in keys:
        by_key.setdefault((g, b), []).append(seq)
    ug: list[str] = []
    ub: list[str] = []
    ulo: list[int] = []
    uhi: list[int] = []
    for (g, b), seqs in sorted(by_key.items()):
        for lo, hi in runs(seqs):
            ug.append(g)
            ub.append(b)
            ulo.append(lo)
            uhi.append(hi)
    if ug:
        await cur.execute(
            "INSERT INTO ingest_evaluated AS s (gateway_id, boot_id, lane, evaluated)"
            " SELECT g, b, %s, range_agg(int8range(lo, hi))"
            " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[])"
            " AS t(g, b, lo, hi) GROUP BY g, b"
            " ON CONFLICT (gateway_id, boot_id, lane) DO UPDATE"
            " SET evaluated = s.evaluated + excluded.evaluated, updated_at = now()",
            (lane, ug, ub, ulo, uhi),
        )
