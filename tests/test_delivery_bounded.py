"""Delivery's bounded queue (issue 11): over the bound a change stays in the database and is
read back in order; every change still arrives once. Real Mosquitto and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiomqtt
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.contract import Severity
from anju.servers import PrivateMosquitto
from backend.alerting.lifecycle import AlertBook, Change
from backend.alerting.model import Raise
from backend.alerting.testing import T0, sample_city
from backend.db.migrate import migrate
from backend.delivery import Delivery, topics_of
from backend.metrics import BackendMetrics
from backend.store import AlertStore, Pending
from tests.support import eventually

pytestmark = pytest.mark.integration


def changes() -> list[Change]:
    """Two changes per device of a small city: raised, then resolved."""
    city = sample_city()
    book = AlertBook()
    out: list[Change] = []
    for i, dev in enumerate(city.devices.values()):
        c = book.raise_(dev, Raise("fire.alarm", Severity.CRITICAL, "火警", T0 + i, {}), T0 + i)
        assert c is not None
        out.append(c)
    for i, alert in enumerate(list(book.open.values())):
        out.append(book.resolve(alert, T0 + 1_000 + i, by="test", note="done"))
    return out


def metric(m: BackendMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


async def test_a_full_queue_sheds_to_the_database_and_every_change_arrives_once(
    db_url: str, broker: PrivateMosquitto
) -> None:
    migrate(db_url)
    all_changes = changes()
    before, live = all_changes[:7], all_changes[7:]
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4) as pool:
        store = AlertStore(pool)
        # Left unpublished by a previous run: read back at start, a page at a time.
        for c in before:
            await store.save(c, T0)
        m = BackendMetrics()
        delivery = Delivery(store, m, maxsize=2, page=3)
        assert await delivery.requeue_unpublished() == len(before)
        published: list[Pending] = []
        delivery.listeners.append(published.append)
        got: Counter[tuple[str, str, str]] = Counter()
        ready = asyncio.Event()

        async def department() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.subscribe("anju/alerts/#", qos=1)
                ready.set()
                async for msg in c.messages:
                    assert isinstance(msg.payload, bytes)
                    p = json.loads(msg.payload)
                    got[(msg.topic.value, p["id"], p["state"])] += 1

        async with aiomqtt.Client("127.0.0.1", broker.port) as client, asyncio.TaskGroup() as tg:
            sub = tg.create_task(department())
            await ready.wait()
            run = tg.create_task(delivery.run(client))
            marks = tg.create_task(delivery.marks())
            # Stored and offered faster than the delivery sends: most are shed.
            expected: Counter[tuple[str, str, str]] = Counter()
            for c in before:
                for t in topics_of(c.payload):
                    expected[(t, c.alert.id, str(c.payload["state"]))] += 1
            for c in live:
                pending = await store.save(c, T0)
                await delivery.enqueue(pending, None)
                for t in topics_of(pending.payload):
                    expected[(t, c.alert.id, str(pending.payload["state"]))] += 1
            await eventually(lambda: len(published) == len(all_changes), 60, "every change sent")
            await eventually(lambda: sum(got.values()) >= sum(expected.values()), 30, "received")
            await eventually(lambda: not delivery._to_mark, 30, "marks stored")
            for t in (run, marks, sub):
                t.cancel()
        ns = [p.n for p in published]
        assert ns == sorted(ns) and len(set(ns)) == len(all_changes)  # in order, once each
        assert got == expected
        assert metric(m, "anju_backend_queue_overflow_total", queue="delivery", policy="shed") > 0
        assert metric(m, "anju_backend_queue_capacity", queue="delivery") == 2
        assert await store.unpublished() == []
