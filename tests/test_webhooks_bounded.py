"""A webhook's bounded queue (issue 11): over the bound a change is left in the audit log
and read back in order once the worker has caught up; every change arrives once, none is
dead-lettered. Real PostgreSQL and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from psycopg_pool import AsyncConnectionPool

from backend.config import WebhookSpec
from backend.db.migrate import migrate
from backend.metrics import BackendMetrics
from backend.store import AlertStore, Pending
from backend.webhooks import Webhooks
from tests.support import eventually
from tests.test_delivery_bounded import changes, metric
from tests.test_webhooks import Receiver, receiving

pytestmark = pytest.mark.integration
SECRET = "a-receiver-secret-of-16+"


async def test_a_full_webhook_queue_reads_back_from_the_audit_log_and_loses_nothing(
    db_url: str,
) -> None:
    migrate(db_url)
    all_changes = changes()
    audiences = Counter(
        (a["audience"], a["scope"]) for c in all_changes for a in c.payload["audiences"]
    )
    (audience, scope), _ = audiences.most_common(1)[0]
    receiver = Receiver()
    spec = WebhookSpec(name="w", audience=audience, scope=scope, url=receiver.url, secret=SECRET)
    with receiving(receiver):
        async with AsyncConnectionPool(db_url, min_size=1, max_size=4) as pool:
            store = AlertStore(pool)
            m = BackendMetrics()
            hooks = Webhooks([spec], store, m, queue_max=2, page=3)
            assert await hooks.resume() == 0
            run = asyncio.create_task(hooks.run())
            wanted: list[int] = []
            bodies: list[tuple[str, str]] = []
            # Offered as delivery publishes them, faster than the receiver takes them.
            for c in all_changes:
                pending: Pending = await store.save(c, 0)
                hooks.offer(pending)
                if {"audience": audience, "scope": scope} in c.payload["audiences"]:
                    wanted.append(pending.n)
                    bodies.append((c.alert.id, str(pending.payload["state"])))
            assert len(wanted) > 4

            def delivered() -> list[int]:
                return [int(h["X-Anju-Delivery"]) for h, _b, _s in receiver.got()]

            await eventually(lambda: len(delivered()) >= len(wanted), 60, "every change posted")
            await eventually(lambda: not hooks._behind, 30, "caught up")
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            assert delivered() == wanted  # in audit order, each once
            got = [json.loads(b) for _h, b, _s in receiver.got()]
            assert [(b["id"], b["state"]) for b in got] == bodies
            assert metric(m, "anju_backend_queue_overflow_total", queue="webhook:w",
                          policy="shed") > 0  # fmt: skip
            assert await hooks.dead_letters() == []
