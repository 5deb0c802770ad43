"""The events lane: events and statuses, in small transactions, never behind telemetry.

- Queue (``ingest_events`` in anju_backend_queue_*): ``put`` waits for room (back-pressure to
  the MQTT reader; it is full only while the database is away), counted as ``policy="wait"``.
- Gathers without waiting (``wait_s`` 0): a flush is what is queued when the writer is free.
- Each transaction in pipeline mode: one round trip to the database (two the first time a
  gateway's boot is seen: its ranges are read), instead of one per statement.
- Its sequence ranges in memory: while this writer holds the events writer's session lock
  (``EVENTS_WRITER_LOCK``) it is the only one writing them, so after the first read it knows
  them without reading them again (the rows are locked all the same). Another backend holding
  the lock: read at every flush. Cleared when the outcome of a transaction is unknown, when
  the writer reconnects, and when the uplink session was lost (``forget_seen``).
- Events go to the rules even as duplicates (marked ``repeat``): see ``_for_rules``.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

import psycopg

from anju.uplink import Record
from backend.db.seqset import SeqSet, runs
from backend.ingest.writer import Common, Flush, Item, LaneWriter, key

log = logging.getLogger("anju.ingest")

EVENTS_WRITER_LOCK = 0x616E6A65  # "anje"
_SEEN_CACHE_MAX = 100_000  # (gateway, boot) pairs


class EventsLane(LaneWriter):
    name = "e"
    queue_name = "ingest_events"

    def __init__(self, common: Common, *, queue_max: int, batch_max: int) -> None:
        super().__init__(common, queue_max=queue_max, batch_max=batch_max, wait_s=0.0)
        # The lane's sequence ranges as committed, by (gateway, boot) (see the module).
        self._seen_cache: dict[tuple[str, str], SeqSet] = {}
        self._cache_ok = False  # the events writer's session lock is held

    async def put(self, items: list[Item]) -> None:
        if self.queue.full():
            self.metrics.queue_overflow.labels(self.queue_name, "wait").inc()
        await self._on_own_loop(self.queue.put(items))
        self._depth()

    def forget_seen(self) -> None:
        """Drop the ranges held in memory (call on the writer's loop): after the uplink
        session was lost another backend may have taken the gateways meanwhile."""
        self._seen_cache.clear()

    def _for_rules(self, flush: Flush, new: list[Record], *, uncertain: bool) -> list[Record]:
        """The new records; after a connection lost mid-commit, the whole flush (its outcome
        is unknown). And events come to the rules even as duplicates: an event that comes
        again was never acknowledged, so the rules may never have seen it (a backend that
        died between its commit and its rules). The rules tolerate a repeat (one open alert
        per device and type)."""
        if uncertain:
            return [r for r in flush.records if key(r) not in self.refused]
        fresh = {key(r) for r in new}
        # A resent event is marked as such: the rules skip it when they have already seen
        # this gateway's later events of that device (engine, ``_EVENT_MARK``).
        return [
            r if key(r) in fresh else replace(r, repeat=True)
            for r in flush.records
            if key(r) in fresh or (r.kind == "e" and key(r) not in self.refused)
        ]

    async def _connected(self, conn: psycopg.AsyncConnection) -> None:
        # Its ranges in memory only while it is the one events writer on this database (a
        # session lock, held as long as the connection); never with several active workers,
        # which all write events.
        if self.common.shared:
            self._seen_cache.clear()
            self._cache_ok = False
            return
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (EVENTS_WRITER_LOCK,))
        row = await cur.fetchone()
        await conn.rollback()
        self._seen_cache.clear()
        self._cache_ok = bool(row and row[0])
        if not self._cache_ok:
            log.warning(
                "another backend writes events to this database: the events lane reads"
                " its sequence ranges at every flush"
            )

    def _session(self, conn: psycopg.AsyncConnection) -> AbstractAsyncContextManager[Any]:
        return conn.pipeline()

    def _cached(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], SeqSet] | None:
        cache = self._seen_cache
        if self._cache_ok and all(k in cache for k in keys):
            return {k: cache[k] for k in keys}  # (in pipeline mode: no round trip to read)
        return None

    def _remember(self, seen: dict[tuple[str, str], SeqSet]) -> None:
        if self._cache_ok:
            if len(self._seen_cache) > _SEEN_CACHE_MAX:
                self._seen_cache.clear()
            self._seen_cache.update(seen)

    def _committed_ranges(self, by_key: dict[tuple[str, str], list[int]]) -> None:
        for k, seqs in by_key.items():
            if k in self._seen_cache:
                for lo, hi in runs(seqs):
                    self._seen_cache[k].add_range(lo, hi)

    def _uncertain(self) -> None:
        self._seen_cache.clear()  # the outcome may be unknown: read them again
