"""The keeper's overflow policy (issue 11): with its inbox full, a producer waits for room
before taking the engine's lock, and no alarm change is dropped. Real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.now import now_ms
from anju.uplink import Record
from backend.alerting.engine import Engine
from backend.alerting.testing import sample_city
from backend.db.migrate import migrate
from backend.delivery import Delivery
from backend.desk import AlertDesk, Keeper, Saved, StateWriter
from backend.metrics import BackendMetrics
from backend.store import AlertStore
from tests.support import eventually
from tests.test_delivery_bounded import metric

pytestmark = pytest.mark.integration

TRIGGERS = [f"c0-{kind}-{i}" for kind in ("manual_call_point", "heat_detector") for i in (0, 1)]


async def test_a_full_keeper_makes_the_rules_wait_and_drops_nothing(db_url: str) -> None:
    migrate(db_url)
    city = sample_city()
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4) as pool:
        store, m = AlertStore(pool), BackendMetrics()
        keeper = Keeper(store, Delivery(store, m), m, capacity=1)
        states = StateWriter(store, m)
        keeper.inbox.bind()
        states.inbox.bind()
        desk = AlertDesk(Engine(city, now_ms=now_ms()), keeper, states)
        assert metric(m, "anju_backend_queue_capacity", queue="states") >= len(city.devices)

        saved: list[Saved] = []

        async def rules() -> None:
            for seq, dev in enumerate(TRIGGERS, 1):
                t = now_ms()
                rec = Record(city.devices[dev].gateway_id, "b", seq, dev, "e", t, t,
                             event_type="alarm", data={})  # fmt: skip
                saved.append(await desk.evaluate_when_room([rec]))

        producer = asyncio.create_task(rules())
        # The first change is in; the second evaluation waits for room, outside the lock.
        await eventually(
            lambda: (
                metric(m, "anju_backend_queue_overflow_total", queue="keeper", policy="wait") > 0
            ),
            30,
            "the rules waiting for room",
        )
        assert not desk.lock.locked() and keeper.inbox.depth == 1
        assert not producer.done()
        writer = asyncio.create_task(states.run())
        running = asyncio.create_task(keeper.run())
        await producer
        for sv in saved:
            await sv.wait()
        keeper.close()
        await running
        writer.cancel()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT device_id, type FROM alerts ORDER BY device_id").fetchall()
    assert sorted(d for d, t in rows if t == "fire.alarm") == sorted(TRIGGERS)
