"""Between the ingest's commits and the rules: events ahead of telemetry, and rule state
stored before a gateway is acknowledged, without the one waiting for the other.

``RuleFeed.committed`` is the ingest's ``on_committed``: it only queues the committed records
(so that the ingest's writers never wait for the rules) and returns. Its task evaluates them:
event and status flushes first, then telemetry in chunks, looking for events between chunks
(a fire alarm never waits behind a large telemetry flush). For each flush, once its rule state
is stored (``StateWriter``), the gateways are acknowledged, in commit order, by a second task.

Overflow policy: at most ``max_waiting`` committed flushes wait for the rules; beyond that
``committed`` waits for room, which holds the ingest's writer (its lane's queue then fills and
the ingest applies its own policy). Nothing committed is ever dropped: at shutdown ``drain``
evaluates what is queued (a committed record that the rules never saw would be acknowledged
as a duplicate later and never evaluated).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from anju.backoff import backoff
from anju.uplink import Record
from backend.alerting.desk import AlertDesk

if TYPE_CHECKING:
    from backend.store import AlertStore

log = logging.getLogger("anju.alerting")
AckFn = Callable[[dict[str, list[int]]], Awaitable[None]]


class StateWriter:
    """Writes rule-state snapshots (JSON text by key), the newest per key, in the order they
    were taken. ``submit`` returns a future done once that snapshot is stored. Pending
    snapshots are merged by key, so what waits is bounded by the number of devices."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self.pending: dict[str, str] = {}
        self.waiters: list[asyncio.Future[None]] = []
        self.wake = asyncio.Event()

    def submit(self, docs: dict[str, str]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not docs:
            fut.set_result(None)
            return fut
        self.pending.update(docs)
        self.waiters.append(fut)
        self.wake.set()
        return fut

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            docs, self.pending = self.pending, {}
            waiters, self.waiters = self.waiters, []
            await self.write(docs)
            for f in waiters:
                if not f.done():
                    f.set_result(None)

    async def write(self, docs: dict[str, str]) -> None:
        delays = backoff(0.2, 5.0)
        while True:
            try:
                await self.store.save_states(docs)
                return
            except psycopg.OperationalError as exc:
                delay = next(delays)
                log.error("could not store rule state (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)


@dataclass(slots=True)
class _Flush:
    records: list[Record]
    acks: dict[str, list[int]]
    bounded: bool = True  # holds a place in ``room`` until acknowledged


class RuleFeed:
    def __init__(
        self, desk: AlertDesk, ack: AckFn, *, max_waiting: int = 64, chunk: int = 256
    ) -> None:
        self.desk = desk
        self.ack = ack
        self.chunk = chunk
        self.urgent: deque[_Flush] = deque()  # events and statuses
        self.bulk: deque[_Flush] = deque()  # telemetry
        self.room = asyncio.Semaphore(max_waiting)
        self.ready = asyncio.Event()
        self.closing = False
        # Flushes evaluated, with their state's future, waiting to be acknowledged (bounded by
        # ``max_waiting``: a flush keeps its place in ``room`` until acknowledged).
        self.to_ack: asyncio.Queue[tuple[asyncio.Future[None], _Flush]] = asyncio.Queue()

    async def committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        if any(r.kind != "t" for r in new):
            # Events never wait for room behind telemetry: the ingest's events queue bounds
            # them already.
            self.urgent.append(_Flush(new, acks, bounded=False))
            self.ready.set()
            return
        try:
            await self.room.acquire()
        except asyncio.CancelledError:
            # Stopping: over the bound, ``drain`` evaluates it.
            self.bulk.append(_Flush(new, acks, bounded=False))
            self.ready.set()
            raise
        self.bulk.append(_Flush(new, acks))
        self.ready.set()

    async def run(self) -> None:
        """Evaluate what is committed, until ``close``d (not cancelled: a flush taken from
        the queue is always evaluated to the end)."""
        while True:
            await self.ready.wait()
            self.ready.clear()
            await self._evaluate_queued()
            if self.closing:
                return

    def close(self) -> None:
        self.closing = True
        self.ready.set()

    async def _evaluate_queued(self) -> None:
        while self.urgent or self.bulk:
            if self.urgent:
                f = self.urgent.popleft()
                saved = await self.desk.evaluate(f.records)
            else:
                f = self.bulk.popleft()
                saved = await self._evaluate_bulk(f.records)
            self.to_ack.put_nowait((saved, f))

    async def _evaluate_bulk(self, records: list[Record]) -> asyncio.Future[None]:
        saved: asyncio.Future[None] | None = None
        for i in range(0, max(len(records), 1), self.chunk):
            while self.urgent:  # events that came in meanwhile go first
                f = self.urgent.popleft()
                self.to_ack.put_nowait((await self.desk.evaluate(f.records), f))
            saved = await self.desk.evaluate(records[i : i + self.chunk])
            await asyncio.sleep(0)  # let the MQTT reader and the ingest run
        assert saved is not None
        return saved

    async def acknowledge(self) -> None:
        """Acknowledge each flush once its rule state is stored, in evaluation order."""
        while True:
            saved, f = await self.to_ack.get()
            await saved
            try:
                await self.ack(f.acks)
            finally:
                if f.bounded:
                    self.room.release()

    async def drain(self) -> None:
        """At shutdown: evaluate what was committed and is still queued (not acknowledged:
        the gateways send it again and it is dropped as a duplicate then)."""
        await self._evaluate_queued()
