"""The alert desk: where the pure engine meets storage and delivery.

Every change the engine returns, or a person makes through the API, goes through ``keep``:
stored with its audit entry (retried while the database is away), then handed to delivery.
Rule-state snapshots are written here too: the states whose timers or open alerts changed
right after each evaluated flush (before the gateway is acknowledged), the rest periodically.
"""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg

from anju.backoff import backoff
from anju.contract import Audience
from anju.uplink import Record
from backend.alerting.engine import Engine
from backend.alerting.lifecycle import Change
from backend.delivery import Delivery
from backend.metrics import BackendMetrics
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

    async def evaluate(self, records: list[Record]) -> None:
        async with self.lock:
            now = now_ms()
            pending = [(c, rec.rx) for rec in records for c in self.engine.feed(rec, now)]
            for change, rx in pending:
                await self.keep(change, rx)
            await self.save_states(urgent_only=True)

    async def tick(self, *, liveness: bool) -> None:
        async with self.lock:
            for change in self.engine.tick(now_ms(), liveness_check=liveness):
                await self.keep(change, None)
            await self.save_states(urgent_only=True)

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

    async def save_states(self, *, urgent_only: bool) -> None:
        e = self.engine
        keys = set(e.urgent) if urgent_only else e.dirty | e.urgent
        if not keys:
            return
        docs = e.snapshot(keys)
        delays = backoff(0.2, 5.0)
        while True:
            try:
                await self.store.save_states(docs)
                break
            except psycopg.OperationalError as exc:
                delay = next(delays)
                log.error("could not store rule state (%s); again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
        e.urgent -= keys
        e.dirty -= keys

    async def snapshots(self, period_s: float) -> None:
        """Write the states changed since the last snapshot, every ``period_s``."""
        while True:
            await asyncio.sleep(period_s)
            async with self.lock:
                await self.save_states(urgent_only=False)
