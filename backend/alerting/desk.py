"""The alert desk: where the pure engine meets storage and delivery, from two threads.

Two event loops use the engine: the backend's main loop (telemetry rules, timers, gateway
states, people acting through the API) and the alarm lane's, on a thread of its own (events
and statuses: ``backend.alarm``). ``lock``, a ``threading.Lock``, is held while the engine
computes and never across an ``await``: a loop waits for it at most one evaluation chunk,
one timer pass or one snapshot chunk.

Every change the engine returns, or a person makes through the API, is handed, with the lock
still held, to the ``Keeper``, so that changes are stored in the order the engine made them.
The keeper runs on the alarm lane's loop: it stores each change with its audit entry
(retried while the database is away), then queues it for delivery. Rule-state snapshots are
taken here too, as JSON text while the engine is locked, and stored by the ``StateWriter``
(also on the alarm lane's loop): the states whose timers or open alerts changed after each
evaluated flush, the rest periodically. ``evaluate`` returns a ``Saved``, which a caller
awaits before acknowledging what it evaluated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import psycopg

from anju import canonical
from anju.contract import Audience
from anju.uplink import Record
from backend.alerting.engine import Engine
from backend.alerting.lifecycle import Change
from backend.db.retry import until_done
from backend.metrics import BackendMetrics

if TYPE_CHECKING:  # (at run time: backend.store imports the alerting package)
    from backend.alerting.feed import StateWriter
    from backend.delivery import Delivery
    from backend.store import AlertStore, Pending

log = logging.getLogger("anju.alerting")
T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def waited(f: cf.Future[T]) -> T:
    """Wait for a future that another thread completes, without cancelling it when this task
    is cancelled (others may wait for the same future, and its thread must still be able to
    complete it)."""
    return await asyncio.shield(asyncio.wrap_future(f))


def done_future() -> cf.Future[None]:
    f: cf.Future[None] = cf.Future()
    f.set_result(None)
    return f


class LoopInbox:
    """Work handed to a task on one event loop from any thread: ``wake`` it after adding."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def bind(self) -> None:
        """Call on the loop that does the work, before anyone hands it any."""
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        loop, event = self.loop, self.event
        assert loop is not None and event is not None, "bind() first"
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        assert self.event is not None, "bind() first"
        await self.event.wait()
        self.event.clear()


@dataclass(slots=True)
class _Batch:
    changes: list[tuple[Change, int | None]]
    done: cf.Future[None] = field(default_factory=cf.Future)


class Keeper:
    """Stores changes in order, then queues them for delivery (on the alarm lane's loop)."""

    def __init__(self, store: AlertStore, delivery: Delivery, metrics: BackendMetrics) -> None:
        self.store = store
        self.delivery = delivery
        self.metrics = metrics
        self.inbox = LoopInbox()
        self._batches: deque[_Batch] = deque()
        self.closing = False

    def put(self, changes: Sequence[tuple[Change, int | None]]) -> cf.Future[None]:
        """Hand over changes (call with the desk's lock held: that is what orders them); the
        future is done once they are stored and queued for delivery."""
        if not changes:
            return done_future()
        batch = _Batch(list(changes))
        self._batches.append(batch)
        self.inbox.wake()
        return batch.done

    async def run(self) -> None:
        """Until ``close``: then what was handed over before is stored, and it returns."""
        while True:
            await self.inbox.wait()
            await self.drain()
            if self.closing:
                return

    def close(self) -> None:
        self.closing = True
        self.inbox.wake()

    async def drain(self) -> None:
        while self._batches:
            batch = self._batches[0]
            for change, rx in batch.changes:
                await self.keep(change, rx)
            self._batches.popleft()
            if not batch.done.done():
                batch.done.set_result(None)

    async def keep(self, change: Change, rx_ms: int | None) -> None:
        """Store a change (then queue it for delivery). A change is never dropped: one the
        database refuses for its content is stored in canonical form, else without its
        evidence (with a note saying so); if even that is refused, this raises and the
        backend stops (it is restarted) rather than acknowledge an alarm it did not store."""
        try:
            pending = await self._save(change)
        except (psycopg.Error, UnicodeError) as exc:  # (a lone surrogate fails in psycopg)
            self.metrics.alert_store_refused.inc()
            if isinstance(exc, psycopg.errors.UniqueViolation):
                # Not its content: an open alert of this device and type is in the database
                # already (stored and published; another engine's, or one this engine does not
                # know of). The alarm is not lost; storing this one again would fail forever.
                log.error(
                    "alert change %s %s of %s conflicts with an open alert in the database"
                    " (%s); that one stands",
                    change.alert.type,
                    change.action,
                    change.alert.id,
                    exc,
                )
                return
            log.error(
                "the database refused alert change %s %s of %s (%s); storing it in canonical form",
                change.alert.type,
                change.action,
                change.alert.id,
                exc,
            )
            stored = None
            for fallback in (_canonical, _without_evidence):
                try:
                    pending = await self._save(fallback(change, str(exc)))
                except (psycopg.Error, UnicodeError, canonical.InputError) as again:
                    exc = again if not isinstance(again, canonical.InputError) else exc
                    continue
                stored = pending
                break
            if stored is None:
                log.critical(
                    "alert change %s %s of %s cannot be stored in any form; stopping",
                    change.alert.type,
                    change.action,
                    change.alert.id,
                )
                raise
            pending = stored
        self.metrics.alert_changes.labels(change.action).inc()
        log.info(
            "alert %s %s %s on %s",
            change.alert.type,
            change.action,
            change.alert.id,
            change.alert.device.id,
        )
        await self.delivery.enqueue(pending, rx_ms)

    async def _save(self, change: Change) -> Pending:
        return await until_done(
            lambda: self.store.save(change, now_ms()),
            "store an alert change",
            log,
            level=logging.ERROR,
        )


def _canonical(change: Change, _why: str) -> Change:
    """The change with every string of its payload in canonical form (``InputError`` if its
    payload has none)."""
    return replace(
        change,
        payload=canonical.clean(change.payload),
        actor=canonical.clean_str(change.actor),
    )


def _without_evidence(change: Change, why: str) -> Change:
    """The change without its evidence and the notes of its acknowledgements, with a note."""
    p = dict(change.payload)
    p["evidence"] = {"note": canonical.clean_str(f"evidence not storable: {why}"[:300])}
    acks = p.get("acks")
    if isinstance(acks, list):
        p["acks"] = [
            {k: v for k, v in a.items() if k != "note"} if isinstance(a, dict) else {} for a in acks
        ]
    return replace(change, payload=canonical.clean(p), actor=canonical.clean_str(change.actor))


@dataclass(frozen=True, slots=True)
class Saved:
    """An evaluation's changes stored and its rule state written, as futures any loop can
    wait for."""

    changes: cf.Future[None]
    state: cf.Future[None]

    async def wait(self) -> None:
        await waited(self.changes)
        await waited(self.state)


class AlertDesk:
    def __init__(self, engine: Engine, keeper: Keeper, states: StateWriter) -> None:
        self.engine = engine
        self.keeper = keeper
        self.states = states
        self.lock = threading.Lock()  # the engine's: held while it computes, never awaited in

    def evaluate(self, records: list[Record]) -> Saved:
        """Rules over committed records; the changes handed to the keeper and the changed
        states to the writer, with the marks of the telemetry evaluated (stored with them:
        ``ingest_evaluated``)."""
        with self.lock:
            now = now_ms()
            pending = [(c, rec.rx) for rec in records for c in self.engine.feed(rec, now)]
            changes = self.keeper.put(pending)
            marks = [(r.gateway_id, r.boot_id, r.seq) for r in records if r.kind == "t"]
            return Saved(changes, self.snapshot(urgent_only=True, marks=marks))

    async def tick(self, *, liveness: bool, slice_size: int = 1_000) -> None:
        """Timers (and liveness and deadlines), the city a slice of devices at a time under
        the lock, so that the alarm lane never waits for a whole pass."""
        e = self.engine
        with self.lock:
            ids = list(e.states)
        now = now_ms()
        for i in range(0, len(ids), slice_size):
            with self.lock:
                self.keeper.put([(c, None) for c in e.tick_timers(now, ids[i : i + slice_size])])
            await asyncio.sleep(0)
        if liveness:
            with self.lock:
                self.keeper.put([(c, None) for c in e.tick_gateways(now)])
            for i in range(0, len(ids), slice_size):
                with self.lock:
                    changes = e.tick_liveness(now, ids[i : i + slice_size])
                    self.keeper.put([(c, None) for c in changes])
                await asyncio.sleep(0)
            with self.lock:
                self.keeper.put([(c, None) for c in e.tick_escalations(now)])
        with self.lock:
            self.snapshot(urgent_only=True)

    def gateway_state(self, gateway_id: str, online: bool) -> None:
        with self.lock:
            changes = self.engine.gateway_state(gateway_id, online, now_ms())
            self.keeper.put([(c, None) for c in changes])

    async def acknowledge(
        self, alert_id: str, audience: Audience, *, by: str, note: str
    ) -> Change | None:
        by, note = canonical.clean_str(by), canonical.clean_str(note)
        with self.lock:
            alert = self.engine.book.get(alert_id)
            change = self.engine.book.acknowledge(
                alert, audience, by=by, note=note, now_ms=now_ms()
            )
            stored = self.keeper.put([(change, None)] if change is not None else [])
        await waited(stored)
        return change

    async def resolve(self, alert_id: str, *, by: str, note: str) -> Change:
        by, note = canonical.clean_str(by), canonical.clean_str(note)
        with self.lock:
            alert = self.engine.book.get(alert_id)
            change = self.engine.book.resolve(
                alert, now_ms(), by=by, note=note or "resolved by a person"
            )
            self.engine.note(change)
            stored = self.keeper.put([(change, None)])
        await waited(stored)
        return change

    def _docs(self, keys: set[str]) -> dict[str, str]:
        return {
            k: json.dumps(v, separators=(",", ":"), ensure_ascii=False)
            for k, v in self.engine.snapshot(keys).items()
        }

    def snapshot(
        self, *, urgent_only: bool, marks: Sequence[tuple[str, str, int]] = ()
    ) -> cf.Future[None]:
        """Hand the changed states to the writer (call with the lock held)."""
        e = self.engine
        keys = set(e.urgent) if urgent_only else e.dirty | e.urgent
        e.urgent -= keys
        e.dirty -= keys
        return self.states.submit(self._docs(keys) if keys else {}, marks)

    async def snapshots(self, period_s: float, *, chunk: int = 200) -> None:
        """Hand over the states changed since the last snapshot, every ``period_s``, a chunk
        at a time, taking the lock for each chunk only, so that the rules never wait for a
        large snapshot. Each state is serialised whole at one instant and handed over at
        once, so the writer always ends with the newest (a state changed meanwhile is dirty
        again)."""
        e = self.engine
        while True:
            await asyncio.sleep(period_s)
            with self.lock:
                # Urgent states are left to ``evaluate``, which stores them before the records
                # behind them are acknowledged; taking them here would let that ack go first.
                keys = list(e.dirty - e.urgent)
                e.dirty -= set(keys)
            for i in range(0, len(keys), chunk):
                with self.lock:
                    self.states.submit(self._docs(set(keys[i : i + chunk])))
                await asyncio.sleep(0)

    def all_docs(self) -> dict[str, str]:
        """Every state, for the writer at shutdown."""
        with self.lock:
            return self._docs(set(self.engine.states))
