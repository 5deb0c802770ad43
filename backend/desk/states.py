"""The writer of rule state: snapshots taken under the desk's lock, stored on the alarm
lane's loop, with the marks of the telemetry they cover."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from anju import canonical
from backend.db.retry import until_done
from backend.desk.inbox import Inbox, done_future, waited
from backend.handoff import forget
from backend.ingest import mark_evaluated
from backend.metrics import BackendMetrics
from backend.store import AlertStore

log = logging.getLogger("anju.alerting")
STATES_CAPACITY = 100_000  # rule states; the desk sets the city's own count


@dataclass(slots=True)
class Snapshot:
    """Rule states (JSON text by key) and the marks of the telemetry they cover, with the
    futures of whoever waits for them to be stored."""

    docs: dict[str, str]
    marks: list[tuple[str, str, int]] = field(default_factory=list)
    waiters: list[cf.Future[None]] = field(default_factory=list)
    handoff: list[int] = field(default_factory=list)  # rows evaluated (backend.handoff)
    # The alert changes of the same evaluations: stored first (``StateWriter``).
    after: list[cf.Future[None]] = field(default_factory=list)


def _merge(old: Snapshot, new: Snapshot) -> Snapshot:
    old.docs.update(new.docs)
    old.marks.extend(new.marks)
    old.waiters.extend(new.waiters)
    old.handoff.extend(new.handoff)
    old.after.extend(new.after)
    return old


def _states(snap: Snapshot) -> int:
    return len(snap.docs)


class StateWriter:
    """Writes rule-state snapshots (JSON text by key), the newest per key, in the order they
    were taken; runs on one loop (the alarm lane's), fed from any thread. ``submit`` returns
    a future done once that snapshot is stored. Pending snapshots are merged by key, so what
    waits is bounded by the number of devices. The marks of the telemetry evaluated
    ((gateway, boot, seq)) are stored in the same transaction (``ingest_evaluated``): a
    record marked evaluated has its rule state stored.

    A snapshot the database refuses for its content is stored in canonical form; a state
    that has none is left out (logged, ``anju_alert_state_refused_total``) and the others are
    stored: one bad state never stops the writer.

    Overflow policy of its inbox (``anju_backend_queue_*{queue="states"}``): snapshots are
    merged by key while they wait (the newest state of a key wins), so the depth is bounded
    by the number of rule states (the city's devices and buildings: ``capacity``, set by the
    desk), whatever the database does; ``submit`` never waits and nothing is dropped. The
    marks waiting with them are bounded by the telemetry waiting to be acknowledged (the rule
    feed's ``max_waiting`` flushes)."""

    def __init__(
        self,
        store: AlertStore,
        metrics: BackendMetrics | None = None,
        *,
        capacity: int = STATES_CAPACITY,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.inbox: Inbox[Snapshot] = Inbox("states", capacity, metrics, size=_states, merge=_merge)
        self.closing = False

    def submit(
        self,
        docs: dict[str, str],
        marks: Sequence[tuple[str, str, int]] = (),
        handoff: Sequence[int] = (),
        after: cf.Future[None] | None = None,
    ) -> cf.Future[None]:
        """``handoff``: rows of ``rules_handoff`` evaluated, deleted with these states.
        ``after``: the alert changes of the same evaluation (the keeper's future), stored
        before these states: a state (an event's mark, a handed-over row's deletion) is never
        stored without the alerts its evaluation raised, so a worker killed in between
        evaluates the record again instead of taking it for done."""
        if not docs and not marks and not handoff:
            return done_future()
        fut: cf.Future[None] = cf.Future()
        waits = [after] if after is not None and not after.done() else []
        self.inbox.put(Snapshot(docs, list(marks), [fut], list(handoff), waits))
        return fut

    async def run(self) -> None:
        """Until ``close``: a snapshot taken is always written to the end (never cancelled
        half-way: its marks would be lost and its telemetry evaluated again)."""
        while True:
            await self.inbox.wait()
            await self.flush()
            if self.closing:
                return

    def close(self) -> None:
        self.closing = True
        self.inbox.wake()

    async def flush(self) -> None:
        snap = self.inbox.take()
        if snap is None:
            return
        for f in snap.after:
            with contextlib.suppress(Exception):  # (the keeper logs its own failures)
                await waited(f)
        if snap.docs or snap.marks or snap.handoff:
            await self.write(snap.docs, snap.marks, snap.handoff)
        for f in snap.waiters:
            if not f.done():
                f.set_result(None)

    async def write(
        self,
        docs: dict[str, str],
        marks: Sequence[tuple[str, str, int]] = (),
        handoff: Sequence[int] = (),
    ) -> None:
        also = None
        if marks or handoff:

            async def also(conn: psycopg.AsyncConnection[Any]) -> None:
                if marks:
                    await mark_evaluated(conn.cursor(), "t", list(marks))
                await forget(conn.cursor(), handoff)

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
