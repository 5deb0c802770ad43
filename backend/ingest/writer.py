"""What the two lanes share: a flush, and the writer that gathers one from the lane's bounded
queue and stores it exactly once (``LaneWriter``; see the package for the steps). A lane
(``backend.ingest.events``, ``backend.ingest.telemetry``) is a subclass that says how it
queues, how it talks to the database and what the rules get after a commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import psycopg

from anju.backoff import backoff
from anju.uplink import Record
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
Cursor = psycopg.AsyncCursor[tuple[Any, ...]]

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
_INLINE_RECORDS = 200  # smaller flushes build their rows on the loop: a thread costs more
_YIELD_EVERY = 1_000  # COPY rows written between two turns of the event loop
# Tests and ``anju chaos`` only (docs/guarantees.md): a lane given this file (the telemetry
# lane, from this environment variable) exits at once, as if SIGKILLed, after its next commit
# that stored new records and before they go to the rules and their acknowledgement, when the
# file exists (deleted first: one exit per file). Unset (production), nothing is looked at.
EXIT_AFTER_COMMIT_ENV: Final = "ANJU_BACKEND_EXIT_AFTER_COMMIT_FILE"
EXIT_AFTER_COMMIT_CODE: Final = 4  # (workers.LOST_EXIT_CODE is 3; errors 1, usage 2)


def key(r: Record) -> tuple[str, str, int]:
    return r.gateway_id, r.boot_id, r.seq


@dataclass(slots=True)
class Common:
    """What both lanes' writers share (they may run on two threads)."""

    conninfo: str
    metrics: BackendMetrics
    # Guarantees broken on purpose (ANJU_BREAK; test only, docs/guarantees.md).
    broken: frozenset[str] = frozenset()
    # Other workers write the same gateways' records at the same time (several active
    # workers, backend.partitions): no lane may trust ranges held in memory.
    shared: bool = False
    gaps: GapTracker = field(default_factory=GapTracker)
    gaps_lock: threading.Lock = field(default_factory=threading.Lock)


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
            k = (r.gateway_id, r.boot_id, r.seq)
            if k in self.keys:
                continue
            self.keys.add(k)
            self.records.append(r)

    def split(self) -> tuple[Flush, Flush]:
        half = len(self.records) // 2
        a, b = Flush(), Flush()
        a.add([*self.dead, *self.records[:half]])
        b.add(list(self.records[half:]))
        return a, b


class LaneWriter:
    """One lane: its bounded queue (filled by ``put``, from any loop) and its writer (``run``,
    on the loop that runs it, with a database connection of its own)."""

    name: ClassVar[str]  # its rows in ``ingest_seen`` and its label in anju_ingest_*
    queue_name: ClassVar[str]  # its label in anju_backend_queue_*

    def __init__(self, common: Common, *, queue_max: int, batch_max: int, wait_s: float) -> None:
        self.common = common
        self.metrics = common.metrics
        self.queue: asyncio.Queue[list[Item]] = asyncio.Queue(queue_max)
        self.batch_max = batch_max
        self.wait_s = wait_s
        # Records of the current flush that the database refused (not for the rules).
        self.refused: set[tuple[str, str, int]] = set()
        # Duplicates of the current flush committed earlier and never evaluated (to the rules).
        self.again: list[Record] = []
        self.busy = False  # between taking a flush and handing it on
        self.closing = False  # ``stop``: return after the flush in hand
        self.mode: StorageMode | None = None  # read at the first connection
        self._known_pairs: set[int] = set()  # (device, metric)s in device_metrics
        self._loop: asyncio.AbstractEventLoop | None = None  # the writer's, while it runs
        self.exit_after_commit: Path | None = None  # EXIT_AFTER_COMMIT_ENV (test only)
        self.metrics.queue_capacity.labels(self.queue_name).set(queue_max)

    # ---- the MQTT reader's side (any loop) -------------------------------------------------

    async def put(self, items: list[Item]) -> None:
        """Queue ``items`` under the lane's overflow policy (see the lanes)."""
        raise NotImplementedError

    async def _on_own_loop(self, put: Coroutine[Any, Any, None]) -> None:
        """Run ``put`` on the writer's loop (the queue is that loop's), waiting for it."""
        loop = self._loop
        if loop is None or loop is asyncio.get_running_loop():
            await put
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(put, loop))

    def _depth(self) -> None:
        self.metrics.queue_depth.labels(self.queue_name).set(self.queue.qsize())

    # ---- the writer --------------------------------------------------------------------------

    async def run(self, on_committed: OnCommitted, *, early_ack: EarlyAck | None = None) -> None:
        """The writer, until cancelled or stopped (``stop``): each flush committed, then
        handed to ``on_committed`` (new records for the rules, and what to acknowledge).
        ``early_ack`` publishes acknowledgements; it is used only when ``ack_before_commit``
        is broken on purpose (ANJU_BREAK, test only)."""
        self._loop = asyncio.get_running_loop()
        conn: psycopg.AsyncConnection | None = None
        try:
            while not self.closing:
                flush = await self._gather()
                if "ack_before_commit" in self.common.broken and early_ack is not None:
                    await early_ack(flush.acks)  # ANJU_BREAK (test only): acked, not committed
                self.busy = True
                self.refused.clear()
                self.again.clear()
                delays = backoff(0.2, 5.0)
                # A connection lost during a commit leaves its outcome unknown: if it did
                # commit, the retry sees the records as duplicates, yet the rules never saw
                # them. After such a loss the rules get the whole flush (they tolerate repeats).
                uncertain = False
                while True:
                    try:
                        if conn is None or conn.closed:
                            conn = await self._connect()
                        new = await self._commit_resilient(conn, flush)
                        break
                    except psycopg.OperationalError as exc:
                        uncertain = True
                        self.metrics.db_errors.inc()
                        delay = next(delays)
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
                        log.warning(
                            "database unavailable (%s); lane %s retries in %.1f s",
                            first,
                            self.name,
                            delay,
                        )
                        if conn is not None:
                            await conn.close()
                            conn = None
                        await asyncio.sleep(delay)
                if self.exit_after_commit is not None and new:
                    self._exit_if_armed(self.exit_after_commit, len(new))
                self.metrics.duplicates.inc(len(flush.records) - len(new))
                await on_committed(self._for_rules(flush, new, uncertain=uncertain), flush.acks)
                self.busy = False
        finally:
            self._loop = None
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    await conn.close()

    async def stop(self, task: asyncio.Task[None], within_s: float = 10) -> None:
        """Stop the writer (running as ``task``) between flushes: waiting for its next flush,
        it is cancelled at once (what it gathered was not acknowledged: it comes again); in
        the middle of one, it first commits it and hands it on (records committed and not
        handed to the rules would come back as duplicates and never be evaluated), within
        ``within_s`` (the database may be away)."""
        self.closing = True
        if not self.busy:
            task.cancel()
        _done, pending = await asyncio.wait({task}, timeout=within_s)
        for t in pending:
            log.warning(
                "lane %s did not finish its flush in %.0f s; cancelled", self.name, within_s
            )
            t.cancel()

    def _exit_if_armed(self, path: Path, stored: int) -> None:
        """Test only (``EXIT_AFTER_COMMIT_ENV``): committed, never acknowledged. One system
        call per commit: the file's removal, which fails when it is not there."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        log.warning(
            "%s: exiting (code %d) after committing %d records of lane %s, before their"
            " acknowledgement (tests only)",
            EXIT_AFTER_COMMIT_ENV,
            EXIT_AFTER_COMMIT_CODE,
            stored,
            self.name,
        )
        os._exit(EXIT_AFTER_COMMIT_CODE)  # as SIGKILL: no cleanup, nothing more published

    async def _gather(self) -> Flush:
        flush = Flush()
        flush.add(await self.queue.get())
        deadline = time.monotonic() + self.wait_s
        while len(flush.records) < self.batch_max:
            if not self.queue.empty():
                flush.add(self.queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                flush.add(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        self._depth()
        return flush

    # ---- what a lane says about itself -----------------------------------------------------

    def _for_rules(self, flush: Flush, new: list[Record], *, uncertain: bool) -> list[Record]:
        """What the rules get after a commit of ``flush`` (``new``: the records stored)."""
        raise NotImplementedError

    async def _connected(self, conn: psycopg.AsyncConnection) -> None:
        """Called with each new connection of the writer."""

    def _session(self, conn: psycopg.AsyncConnection) -> AbstractAsyncContextManager[Any]:
        """Around each transaction (e.g. pipeline mode)."""
        return contextlib.nullcontext()

    def _cached(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], SeqSet] | None:
        """The committed ranges of ``keys`` known without reading them, if all are."""
        return None

    def _remember(self, seen: dict[tuple[str, str], SeqSet]) -> None:
        """The committed ranges just read."""

    def _committed_ranges(self, by_key: dict[tuple[str, str], list[int]]) -> None:
        """The sequence numbers just committed."""

    def _uncertain(self) -> None:
        """A transaction failed: its outcome may be unknown."""

    async def _unevaluated(
        self, cur: Cursor, records: list[Record], new: list[Record]
    ) -> list[Record]:
        """The flush's duplicates the rules must get again."""
        return []

    async def _done_with(self, cur: Cursor, rows: Rows, new: list[Record], only_mark: bool) -> None:
        """Records of the transaction that never go to the rules (in it)."""

    async def _dirty_before(self, cur: Cursor) -> int | None:
        """Readings before this time (ms) mark their hour dirty for the rollups."""
        return None

    # ---- storing -----------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self.common.conninfo)
        if self.mode is None:
            cur = await conn.execute("SELECT mode FROM anju_storage")
            row = await cur.fetchone()
            self.mode = StorageMode(row[0]) if row else StorageMode.PLAIN
            await conn.rollback()
            log.info("ingest lane %s writing to %s storage", self.name, self.mode)
        await self._connected(conn)
        return conn

    async def _commit_resilient(self, conn: psycopg.AsyncConnection, flush: Flush) -> list[Record]:
        """Commit; when the database refuses the content, bisect to the refused records."""
        try:
            return await self._commit(conn, flush)
        except psycopg.OperationalError:
            raise
        except (psycopg.Error, UnicodeError) as exc:  # (a lone surrogate fails in psycopg)
            if len(flush.records) <= 1:
                for r in flush.records:
                    log.error("database refused record %s/%s/%s: %s", *key(r), exc)
                    self.metrics.rejected.labels("db_refused").inc()
                    self.refused.add(key(r))
                    topic = f"anju/gw/{r.gateway_id}/up"
                    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
                    flush.dead.append(DeadLetter.of_record(topic, "db_refused", detail, r))
                try:
                    await self._commit(conn, flush, only_mark=True)
                except psycopg.OperationalError:
                    raise
                except (psycopg.Error, UnicodeError) as exc2:
                    # Not even its sequence number could be stored (e.g. out of range): it is
                    # acknowledged all the same, or it would be sent and refused forever.
                    log.error("could not mark the refused record seen: %s", exc2)
                return []
            a, b = flush.split()
            return await self._commit_resilient(conn, a) + await self._commit_resilient(conn, b)

    async def _commit(
        self, conn: psycopg.AsyncConnection, flush: Flush, *, only_mark: bool = False
    ) -> list[Record]:
        started = time.perf_counter()
        try:
            async with self._session(conn):
                rows, by_key, copy_done, again = await self._transaction(conn, flush, only_mark)
        except BaseException:
            self._uncertain()
            raise
        self._committed_ranges(by_key)
        self.again.extend(again)
        finished = time.perf_counter()
        self._after_commit(rows, by_key, copy_done - started, finished - started)
        return rows.stored

    async def _transaction(
        self, conn: psycopg.AsyncConnection, flush: Flush, only_mark: bool
    ) -> tuple[Rows, dict[tuple[str, str], list[int]], float, list[Record]]:
        keys = sorted({(r.gateway_id, r.boot_id) for r in flush.records})
        gws, boots = [k[0] for k in keys], [k[1] for k in keys]
        async with conn.transaction():
            cur = conn.cursor()
            await cur.execute(
                "INSERT INTO ingest_seen (gateway_id, boot_id, lane)"
                " SELECT g, b, %s FROM unnest(%s::text[], %s::text[]) AS t(g, b)"
                " ON CONFLICT DO NOTHING",
                (self.name, gws, boots),
            )
            await cur.execute(
                "SELECT gateway_id, boot_id, seen FROM ingest_seen WHERE lane = %s AND"
                " (gateway_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                " ORDER BY gateway_id, boot_id FOR UPDATE",
                (self.name, gws, boots),
            )
            # The rows are locked all the same; a lane may know their contents already.
            seen = self._cached(keys)
            if seen is None:
                seen = {
                    (g, b): SeqSet.of((rg.lower, rg.upper) for rg in mr)
                    for g, b, mr in await cur.fetchall()
                }
                self._remember(seen)
            if "skip_dedupe" in self.common.broken:  # ANJU_BREAK (test only): stored again
                seen = {}
            empty = SeqSet()
            new = [
                r for r in flush.records if r.seq not in seen.get((r.gateway_id, r.boot_id), empty)
            ]
            again: list[Record] = []
            if len(new) < len(flush.records) and not only_mark:
                again = await self._unevaluated(cur, flush.records, new)
            rows = Rows() if only_mark else await self._write(cur, new)
            if flush.dead:
                await store_dead_letters(cur, flush.dead)
            await self._done_with(cur, rows, new, only_mark)
            copy_done = time.perf_counter()
            by_key: dict[tuple[str, str], list[int]] = {}
            for r in new:
                by_key.setdefault((r.gateway_id, r.boot_id), []).append(r.seq)
            columns = _range_columns(by_key)
            if columns[0]:
                await cur.execute(
                    "INSERT INTO ingest_seen AS s (gateway_id, boot_id, lane, seen)"
                    " SELECT g, b, %s, range_agg(int8range(lo, hi))"
                    " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[])"
                    " AS t(g, b, lo, hi) GROUP BY g, b"
                    " ON CONFLICT (gateway_id, boot_id, lane) DO UPDATE"
                    " SET seen = s.seen + excluded.seen, updated_at = now()",
                    (self.name, *columns),
                )
        return rows, by_key, copy_done, again

    async def _write(self, cur: Cursor, new: list[Record]) -> Rows:
        dirty_before_ms = await self._dirty_before(cur)
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
            # An INSERT, not a COPY: it can be pipelined (the events lane; flushes are small).
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
                log.warning("record %s/%s/%s has a time out of range; rejected", *key(r))
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
        rows: Rows,
        by_key: dict[tuple[str, str], list[int]],
        copy_s: float,
        commit_s: float,
    ) -> None:
        m = self.metrics
        m.flushes.labels(self.name).inc()
        m.copy_seconds.labels(self.name).observe(copy_s)
        m.commit_seconds.labels(self.name).observe(commit_s)
        m.readings.inc(len(rows.readings))
        for r in rows.stored:
            m.records.labels(r.kind).inc()
        if len(self._known_pairs) > _KNOWN_PAIRS_MAX:
            self._known_pairs.clear()
        self._known_pairs.update(hash(p) for p in rows.pairs)
        if rows.newest_ms is not None:
            m.lag.set(max(0.0, time.time() - rows.newest_ms / 1000))
        common = self.common
        with common.gaps_lock:
            for (g, b), seqs in by_key.items():
                opened = common.gaps.add(g, b, seqs)
                if opened:
                    m.gaps.inc(opened)
            m.seq_missing.set(common.gaps.total_missing)


async def mark_evaluated(
    cur: psycopg.AsyncCursor[Any], lane: str, keys: list[tuple[str, str, int]]
) -> None:
    """Add (gateway, boot, seq)s to ``ingest_evaluated`` (in the caller's transaction)."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for g, b, seq in keys:
        by_key.setdefault((g, b), []).append(seq)
    columns = _range_columns(by_key)
    if columns[0]:
        await cur.execute(
            "INSERT INTO ingest_evaluated AS s (gateway_id, boot_id, lane, evaluated)"
            " SELECT g, b, %s, range_agg(int8range(lo, hi))"
            " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::int8[])"
            " AS t(g, b, lo, hi) GROUP BY g, b"
            " ON CONFLICT (gateway_id, boot_id, lane) DO UPDATE"
            " SET evaluated = s.evaluated + excluded.evaluated, updated_at = now()",
            (lane, *columns),
        )


def _range_columns(
    by_key: dict[tuple[str, str], list[int]],
) -> tuple[list[str], list[str], list[int], list[int]]:
    """The gateway, boot, low and high (exclusive) columns of ``by_key``'s sequence numbers
    as runs, for ``unnest`` into ``int8range(lo, hi)``; in key order (the order rows lock in)."""
    gws: list[str] = []
    boots: list[str] = []
    los: list[int] = []
    his: list[int] = []
    for (g, b), seqs in sorted(by_key.items()):
        for lo, hi in runs(seqs):
            gws.append(g)
            boots.append(b)
            los.append(lo)
            his.append(hi)
    return gws, boots, los, his
