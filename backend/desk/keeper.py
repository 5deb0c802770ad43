"""The keeper: every alert change, whichever thread made it, stored in the order the engine
made it (with its audit entry, retried while the database is away), then queued for
delivery; on the alarm lane's loop.

Overflow policy of its inbox (``anju_backend_queue_*{queue="keeper"}``, bound
``KEEPER_CAPACITY`` alert changes): an alarm change is never dropped. ``put`` is called with
the engine's lock held and never waits; the producers that can (the telemetry rules, the
timers, people acting through the API: ``AlertDesk``) wait for room *before* taking the lock
(policy "wait"), so when the database is slow the rules slow down, back to the ingest and the
gateways' outboxes, rather than lose a change or hold the lock. Gateway states and the alarm
lane's evaluation put without waiting (at most a few changes each, one hand-over at a time).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import psycopg

from anju import canonical
from anju.now import now_ms
from backend.alerting.lifecycle import Change
from backend.db.retry import until_done
from backend.delivery import Delivery
from backend.desk.inbox import Inbox, done_future
from backend.metrics import BackendMetrics
from backend.store import AlertStore, Pending

log = logging.getLogger("anju.alerting")
KEEPER_CAPACITY = 10_000  # alert changes handed over and not yet stored


@dataclass(slots=True)
class _Batch:
    changes: list[tuple[Change, int | None]]
    done: cf.Future[None] = field(default_factory=cf.Future)


def _changes(batch: _Batch) -> int:
    return len(batch.changes)


class Keeper:
    """Stores changes in order, then queues them for delivery (on the alarm lane's loop)."""

    def __init__(
        self,
        store: AlertStore,
        delivery: Delivery,
        metrics: BackendMetrics,
        *,
        capacity: int = KEEPER_CAPACITY,
    ) -> None:
        self.store = store
        self.delivery = delivery
        self.metrics = metrics
        self.inbox: Inbox[_Batch] = Inbox("keeper", capacity, metrics, size=_changes)
        self.closing = False

    def put(self, changes: Sequence[tuple[Change, int | None]]) -> cf.Future[None]:
        """Hand over changes (call with the desk's lock held: that is what orders them); the
        future is done once they are stored and queued for delivery."""
        if not changes:
            return done_future()
        batch = _Batch(list(changes))
        self.inbox.put(batch)
        return batch.done

    async def room(self) -> None:
        """Until the inbox has room (call before taking the desk's lock, never with it)."""
        await self.inbox.room()

    async def run(self) -> None:
        """Until ``close``: then what was handed over before is stored, and it returns."""
        while True:
            await self.inbox.wait()
            await self.drain()
            if self.closing:
                self.inbox.close()  # nobody stores any more: no producer waits for room
                return

    def close(self) -> None:
        self.closing = True
        self.inbox.wake()

    async def drain(self) -> None:
        while (batch := self.inbox.head()) is not None:
            for change, rx in batch.changes:
                await self.keep(change, rx)
            self.inbox.pop()
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
