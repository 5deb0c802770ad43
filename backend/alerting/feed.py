"""Between the telemetry lane's commits and the rules; and the writer of rule state.

``RuleFeed.committed`` is the telemetry lane's ``on_committed`` (on the main loop): it only
queues the committed records (so that the ingest's writer never waits for the rules) and
returns. Its task evaluates them in chunks, yielding between chunks (the desk's lock is taken
per chunk, so the alarm lane never waits for more than one). For each flush, once its alert
changes and rule state are stored (``desk.Saved``), the gateways are acknowledged, in commit
order, by a second task. Events and statuses do not come here: the alarm lane evaluates them
on its own thread (``backend.alarm``).

Overflow policy: at most ``max_waiting`` committed flushes wait for the rules; beyond that
``committed`` waits for room, which holds the ingest's writer (its lane's queue then fills and
the ingest applies its own policy). Nothing committed is ever dropped: at shutdown ``drain``
evaluates what is queued (a committed record that the rules never saw would be acknowledged
as a duplicate later and never evaluated).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from anju import canonical
from anju.uplink import Record
from backend.alerting.desk import AlertDesk, LoopInbox, Saved, done_future
from backend.db.retry import until_done
from backend.ingest import mark_evaluated
from backend.metrics import BackendMetrics

if TYPE_CHECKING:
    from backend.store import AlertStore

log = logging.getLogger("anju.alerting")
AckFn = Callable[[dict[str, list[int]]], Awaitable[None]]


class StateWriter:
    """Writes rule-state snapshots (JSON text by key), the newest per key, in the order they
    were taken; runs on one loop (the alarm lane's), fed from any thread. ``submit`` returns
    a future done once that snapshot is stored. Pending snapshots are merged by key, so what
    waits is bounded by the number of devices. The marks of the telemetry evaluated
    ((gateway, boot, seq)) are stored in the same transaction (``ingest_evaluated``): a
    record marked evaluated has its rule state stored.

    A snapshot the database refuses for its content is stored in canonical form; a state
    that has none is left out (logged, ``anju_alert_state_refused_total``) and the others are
    stored: one bad state never stops the writer."""

    def __init__(self, store: AlertStore, metrics: BackendMetrics | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.inbox = LoopInbox()
        self._guard = threading.Lock()
        self.pending: dict[str, str] = {}
        self.marks: list[tuple[str, str, int]] = []
        self.waiters: list[cf.Future[None]] = []

    def submit(
        self, docs: dict[str, str], marks: Sequence[tuple[str, str, int]] = ()
    ) -> cf.Future[None]:
        if not docs and not marks:
            return done_future()
        fut: cf.Future[None] = cf.Future()
        with self._guard:
            self.pending.update(docs)
            self.marks.extend(marks)
            self.waiters.append(fut)
        self.inbox.wake()
        return fut

    async def run(self) -> None:
        while True:
            await self.inbox.wait()
            await self.flush()

    async def flush(self) -> None:
        with self._guard:
            docs, self.pending = self.pending, {}
            marks, self.marks = self.marks, []
            waiters, self.waiters = self.waiters, []
        if docs or marks:
            await self.write(docs, marks)
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def write(self, docs: dict[str, str], marks: Sequence[tuple[str, str, int]] = ()) -> None:
        also = None
        if marks:

            async def also(conn: psycopg.AsyncConnection[Any]) -> None:
                await mark_evaluated(conn.cursor(), "t", list(marks))

        try:
            await self._write(docs, also)
        except (psycopg.Error, UnicodeError) as exc:  # (a lone surrogate fails in psycopg)
            log.error("the database refused rule state (%s); storing it in canonical form", exc)
            await self._write_canonical(docs, also)

    async def _write(
        self,
        docs: dict[str, str],
        also: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None,
    ) -> None:
        await until_done(lambda: self.store.save_states(docs, also), "store rule state", log)

    async def _write_canonical(
        self,
        docs: dict[str, str],
        also: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]] | None,
    ) -> None:
        clean: dict[str, str] = {}
        for key, text in docs.items():
            try:
                clean[canonical.clean_str(key)] = canonical.dumps(
                    canonical.clean(canonical.loads(text, max_bytes=len(text) + 1))
                )
            except canonical.InputError as exc:
                self._refused(key, exc)
        try:
            await self._write(clean, also)
            return
        except (psycopg.Error, UnicodeError):
            pass
        # One at a time: what is still refused is left out.
        for key, text in clean.items():
            try:
                await self._write({key: text}, None)
            except (psycopg.Error, UnicodeError) as exc:
                self._refused(key, exc)
        if also is not None:
            await self._write({}, also)

    def _refused(self, key: str, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.alert_state_refused.inc()
        log.critical("the rule state of %r cannot be stored (%s); left out", key, exc)


@dataclass(slots=True)
class _Flush:
    records: list[Record]
    acks: dict[str, list[int]]
    bounded: bool = True  # holds a place in ``room`` until acknowledged


class RuleFeed:
    def __init__(
        self, desk: AlertDesk, ack: AckFn, *, max_waiting: int = 64, chunk: int = 128
    ) -> None:
        self.desk = desk
        self.ack = ack
        self.chunk = chunk
        self.bulk: deque[_Flush] = deque()
        self.room = asyncio.Semaphore(max_waiting)
        self.ready = asyncio.Event()
        self.closing = False
        # Flushes evaluated, with what they saved, waiting to be acknowledged (bounded by
        # ``max_waiting``: a flush keeps its place in ``room`` until acknowledged).
        self.to_ack: asyncio.Queue[tuple[list[Saved], _Flush]] = asyncio.Queue()

    async def committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
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
        while self.bulk:
            f = self.bulk.popleft()
            saved = []
            for i in range(0, max(len(f.records), 1), self.chunk):
                saved.append(self.desk.evaluate(f.records[i : i + self.chunk]))
                await asyncio.sleep(0)  # let the MQTT reader and the ingest run
            self.to_ack.put_nowait((saved, f))

    async def acknowledge(self) -> None:
        """Acknowledge each flush once its changes and rule state are stored, in order."""
        while True:
            saved, f = await self.to_ack.get()
            try:
                for s in saved:
                    await s.wait()
                await self.ack(f.acks)
            finally:
                if f.bounded:
                    self.room.release()

    async def drain(self) -> None:
        """At shutdown: evaluate what was committed and is still queued (not acknowledged:
        the gateways send it again and it is dropped as a duplicate then)."""
        await self._evaluate_queued()
