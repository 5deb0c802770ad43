"""The alert desk: where the pure engine meets storage and delivery.

Every change the engine returns, or a person makes through the API, goes through ``keep``:
stored with its audit entry (retried while the database is away), then handed to delivery.
Rule-state snapshots are taken here too, as JSON text while the engine is locked, and stored
by the ``StateWriter`` outside the lock: the states whose timers or open alerts changed after
each evaluated flush (``evaluate`` returns the future the gateway's acknowledgement waits
for), the rest periodically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

import psycopg

from anju.backoff import backoff
from anju.contract import Audience
from anju.uplink import Record
from backend.alerting.engine import Engine
from backend.alerting.lifecycle import Change
from backend.metrics import BackendMetrics

if TYPE_CHECKING:  # (at run time: backend.store imports the alerting package)
    from backend.alerting.feed import StateWriter
    from backend.delivery import Delivery
    from backend.store import AlertStore

log = logging.getLogger("anju.alerting")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class AlertDesk:
    def __init__(
        self, engine: Engine, store: AlertStore, delivery: Delivery, metrics: BackendMetrics
    ) -> None:
        self.engine = engine
        self.store = store
        self.delivery = delivery
        self.metrics = metrics
        self.lock = asyncio.Lock()  # one writer of engine state at a time
        self.states: StateWriter | None = None  # set by the service (feed.StateWriter)

    async def evaluate(self, records: list[Record]) -> asyncio.Future[None]:
        """Rules over committed records; the changes stored and queued for delivery. Returns
        the future of the rule state's snapshot being stored."""
        async with self.lock:
            now = now_ms()
            pending = [(c, rec.rx) for rec in records for c in self.engine.feed(rec, now)]
            for change, rx in pending:
                await self.keep(change, rx)
            return self.snapshot(urgent_only=True)

    async def tick(self, *, liveness: bool) -> None:
        async with self.lock:
            for change in self.engine.tick(now_ms(), liveness_check=liveness):
                await self.keep(change, None)
            self.snapshot(urgent_only=True)

    async def gateway_state(self, gateway_id: str, online: bool) -> None:
        async with self.lock:
            for change in self.engine.gateway_state(gateway_id, online, now_ms()):
                await self.keep(change, None)

    async def acknowledge(
        self, alert_id: str, audience: Audience, *, by: str, note: str
    ) -> Change | None:
        async with self.lock:
            alert = self.engine.book.get(alert_id)
            change = self.engine.book.acknowledge(
                alert, audience, by=by, note=note, now_ms=now_ms()
            )
            if change is not None:
                await self.keep(change, None)
            return change

    async def resolve(self, alert_id: str, *, by: str, note: str) -> Change:
        async with self.lock:
            alert = self.engine.book.get(alert_id)
            change = self.engine.book.resolve(
                alert, now_ms(), by=by, note=note or "resolved by a person"
            )
            self.engine.note(change)
            await self.keep(change, None)
            return change

    async def keep(self, change: Change, rx_ms: int | None) -> None:
        delays = backoff(0.2, 5.0)
        while True:
            try:
                pending = await self.store.save(change, now_ms())
                break
            except psycopg.OperationalError as exc:
                delay = next(delays)
                log.error("could not store alert change (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        self.metrics.alert_changes.labels(change.action).inc()
        log.info(
            "alert %s %s %s on %s",
            change.alert.type,
            change.action,
            change.alert.id,
            change.alert.device.id,
        )
        await self.delivery.enqueue(pending, rx_ms)

    def _docs(self, keys: set[str]) -> dict[str, str]:
        return {
            k: json.dumps(v, separators=(",", ":"), ensure_ascii=False)
            for k, v in self.engine.snapshot(keys).items()
        }

    def snapshot(self, *, urgent_only: bool) -> asyncio.Future[None]:
        """Hand the changed states to the writer (call with the lock held)."""
        assert self.states is not None, "the service sets the desk's StateWriter"
        e = self.engine
        keys = set(e.urgent) if urgent_only else e.dirty | e.urgent
        e.urgent -= keys
        e.dirty -= keys
        return self.states.submit(self._docs(keys) if keys else {})

    async def snapshots(self, period_s: float, *, chunk: int = 200) -> None:
        """Hand over the states changed since the last snapshot, every ``period_s``, a chunk
        at a time without holding the lock, so that the rules never wait for a large
        snapshot. Each state is serialised whole at one instant and handed over at once, so
        the writer always ends with the newest (a state changed meanwhile is dirty again)."""
        e = self.engine
        while True:
            await asyncio.sleep(period_s)
            # Urgent states are left to ``evaluate``, which stores them before the records
            # behind them are acknowledged; taking them here would let that ack go out first.
            keys = list(e.dirty - e.urgent)
            e.dirty -= set(keys)
            for i in range(0, len(keys), chunk):
                self.snapshot_keys(set(keys[i : i + chunk]))
                await asyncio.sleep(0)

    def snapshot_keys(self, keys: set[str]) -> None:
        assert self.states is not None
        self.states.submit(self._docs(keys))

    async def save_all(self) -> None:
        """At shutdown, after every task has stopped: every state, written now."""
        assert self.states is not None
        async with self.lock:
            docs = self._docs(set(self.engine.states))
        await self.states.write(docs)
