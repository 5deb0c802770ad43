"""The alert desk: where the pure engine meets storage and delivery, from two threads.

Two event loops use the engine: the backend's main loop (telemetry rules, timers, gateway
states, people acting through the API) and the alarm lane's, on a thread of its own (events
and statuses: ``backend.alarm``). ``lock``, a ``threading.Lock``, is held while the engine
computes and never across an ``await``: a loop waits for it at most one evaluation chunk,
one timer pass or one snapshot chunk. This package is the only place that lock exists.

Every change the engine returns, or a person makes through the API, is handed, with the lock
still held, to the ``Keeper`` (``backend.desk.keeper``), so that changes are stored in the
order the engine made them. Rule-state snapshots are taken here too, as JSON text while the
engine is locked, and stored by the ``StateWriter`` (``backend.desk.states``): the states
whose timers or open alerts changed after each evaluated flush, the rest periodically.
``evaluate`` returns a ``Saved``, which a caller awaits before acknowledging what it
evaluated.

The keeper's inbox is bounded (``backend.desk.keeper``): every producer here that can wait
awaits ``keeper.room()`` before taking the lock, never with it held, so a slow database slows
the rules down instead of losing a change or holding the lock (``evaluate_when_room``,
``tick``, ``acknowledge``, ``resolve``; ``evaluate`` and ``gateway_state`` are for callers
that cannot wait: they put at once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anju import canonical
from anju.contract import Audience
from anju.now import now_ms
from anju.uplink import Record
from backend.alerting.engine import Engine
from backend.alerting.lifecycle import Alert, Change
from backend.desk.inbox import waited
from backend.desk.keeper import Keeper
from backend.desk.states import StateWriter


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
        devs = engine.devices.values()
        buildings = {(d.community_id, d.building) for d in devs if d.building is not None}
        states.inbox.capacity = max(1, len(engine.devices) + len(buildings))

    async def room(self) -> None:
        """Until the keeper has room for more changes (await before taking ``lock``)."""
        await self.keeper.room()

    async def evaluate_when_room(self, records: list[Record], handoff: Sequence[int] = ()) -> Saved:
        """``evaluate``, once the keeper has room."""
        await self.keeper.room()
        return self.evaluate(records, handoff)

    def evaluate(self, records: list[Record], handoff: Sequence[int] = ()) -> Saved:
        """Rules over committed records; the changes handed to the keeper and the changed
        states to the writer, with the marks of the telemetry evaluated (stored with them:
        ``ingest_evaluated``) and the ``handoff`` rows they came in (deleted with them)."""
        with self.lock:
            now = now_ms()
            pending = [(c, rec.rx) for rec in records for c in self.engine.feed(rec, now)]
            changes = self.keeper.put(pending)
            marks = [(r.gateway_id, r.boot_id, r.seq) for r in records if r.kind == "t"]
            state = self.snapshot(urgent_only=True, marks=marks, handoff=handoff, after=changes)
            return Saved(changes, state)

    async def tick(self, *, liveness: bool, slice_size: int = 1_000) -> None:
        """Timers (and liveness and deadlines), the city a slice of devices at a time under
        the lock, so that the alarm lane never waits for a whole pass."""
        e = self.engine
        with self.lock:
            ids = list(e.states)
        now = now_ms()
        last: cf.Future[None] | None = None  # (the keeper stores in order: the last one)

        def put(changes: list[Change]) -> None:
            nonlocal last
            if changes:
                last = self.keeper.put([(c, None) for c in changes])

        for i in range(0, len(ids), slice_size):
            await self.keeper.room()
            with self.lock:
                put(e.tick_timers(now, ids[i : i + slice_size]))
            await asyncio.sleep(0)
        if liveness:
            await self.keeper.room()
            with self.lock:
                put(e.tick_gateways(now))
            for i in range(0, len(ids), slice_size):
                await self.keeper.room()
                with self.lock:
                    put(e.tick_liveness(now, ids[i : i + slice_size]))
                await asyncio.sleep(0)
            await self.keeper.room()
            with self.lock:
                put(e.tick_escalations(now))
        with self.lock:
            self.snapshot(urgent_only=True, after=last)

    def adopt(
        self, alerts: list[Alert], docs: dict[str, dict[str, Any]], rearm: Callable[[], None]
    ) -> None:
        """A partition's open alerts and rule states, into the engine (``Engine.adopt``);
        ``rearm`` then runs under the lock too (the held-open timers of its states)."""
        with self.lock:
            self.engine.adopt(alerts, docs, now_ms())
            rearm()

    def gateway_state(self, gateway_id: str, online: bool) -> None:
        with self.lock:
            changes = self.engine.gateway_state(gateway_id, online, now_ms())
            self.keeper.put([(c, None) for c in changes])

    async def acknowledge(
        self, alert_id: str, audience: Audience, *, by: str, note: str
    ) -> Change | None:
        by, note = canonical.clean_str(by), canonical.clean_str(note)
        await self.keeper.room()
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
        await self.keeper.room()
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
        self,
        *,
        urgent_only: bool,
        marks: Sequence[tuple[str, str, int]] = (),
        handoff: Sequence[int] = (),
        after: cf.Future[None] | None = None,
    ) -> cf.Future[None]:
        """Hand the changed states to the writer (call with the lock held); ``after``: the
        alert changes they must not be stored before."""
        e = self.engine
        keys = set(e.urgent) if urgent_only else e.dirty | e.urgent
        e.urgent -= keys
        e.dirty -= keys
        return self.states.submit(self._docs(keys) if keys else {}, marks, handoff, after)

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
