"""Two workers' ingest paths writing the same gateways at once (issue 11, docs/scaling.md:
two workers receive the same redelivered batch; the shared subscription's round robin): every
record stored once, whichever writer commits it, on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from anju.uplink import up_topic
from backend.db.migrate import migrate
from backend.ingest import EVENTS_WRITER_LOCK, Ingest
from backend.metrics import BackendMetrics
from tests.support import eventually
from tests.test_ingest import Harness, counts, running
from tests.test_ingest_support import SimOutbox

pytestmark = pytest.mark.integration


async def test_two_writers_same_batches_stored_once(db_url: str) -> None:
    migrate(db_url)
    # A third session holds the events writers' lock, so neither writer keeps its ranges in
    # memory: several receivers must read them at every flush (docs/scaling.md, next step).
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (EVENTS_WRITER_LOCK,))
        boxes = [SimOutbox(f"gw-{g}", 600, event_every=7) for g in "abc"]
        ingests = [Ingest(db_url, BackendMetrics(), batch_max_records=64, batch_wait_ms=2)]
        ingests.append(Ingest(db_url, BackendMetrics(), batch_max_records=64, batch_wait_ms=2))
        hs = [Harness(i, boxes) for i in ingests]
        async with running(ingests[0], hs[0]), running(ingests[1], hs[1]):
            for _ in range(3):  # every batch to both workers, three times over
                batches = [(box.gateway_id, p) for box in boxes for p in box.batches(per_batch=40)]
                await asyncio.gather(
                    *(
                        i.submit(up_topic(gw), p)
                        for gw, p in batches
                        for i in (ingests if len(p) % 2 else ingests[::-1])
                    )
                )
                await eventually(
                    lambda: all(i.telemetry.queue.empty() and not i.telemetry.busy
                                and i.events.queue.empty() and not i.events.busy
                                for i in ingests),
                    60,
                    "both writers idle",
                )  # fmt: skip
                for box in boxes:
                    box.unacked = set(box.bodies)
    readings, distinct, events, seen = counts(db_url)
    assert readings == distinct == sum(b.expected_readings() for b in boxes)
    assert events == sum(b.expected_events() for b in boxes)
    assert seen == 1800
    # Every record reached the rules. (Here nothing marks telemetry evaluated, as the rules'
    # state writer does: a duplicate committed but not yet marked goes to the rules again, on
    # the other writer. That is why evaluation needs one owner per device: docs/scaling.md.)
    handed = {(r.gateway_id, r.seq) for h in hs for r in h.handed_on}
    assert handed == {(b.gateway_id, s) for b in boxes for s in b.bodies}
