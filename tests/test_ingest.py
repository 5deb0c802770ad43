"""The Ingest class on a real PostgreSQL: exactly once, both lanes, refused records, restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from anju.servers import PrivatePostgres
from anju.uplink import Record, encode_batch, record_body, up_topic
from backend.db.migrate import migrate
from backend.ingest import Ingest
from backend.metrics import BackendMetrics
from tests.support import eventually
from tests.test_ingest_support import T0, SimOutbox

pytestmark = pytest.mark.integration


class Harness:
    def __init__(self, ingest: Ingest, outboxes: list[SimOutbox]) -> None:
        self.ingest = ingest
        self.boxes = {b.gateway_id: b for b in outboxes}
        self.handed_on: list[Record] = []
        self.acked: Counter[tuple[str, int]] = Counter()

    async def on_committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        self.handed_on.extend(new)
        for gw, seqs in acks.items():
            self.acked.update((gw, s) for s in seqs)
            if gw in self.boxes:
                self.boxes[gw].confirm(seqs)

    async def send_unacked(self, per_batch: int = 50) -> None:
        for box in self.boxes.values():
            for payload in box.batches(per_batch):
                await self.ingest.submit(up_topic(box.gateway_id), payload)

    def done(self) -> bool:
        return all(not b.unacked for b in self.boxes.values())


@contextlib.asynccontextmanager
async def running(ingest: Ingest, h: Harness) -> AsyncIterator[None]:
    task = asyncio.create_task(ingest.run(h.on_committed), name="ingest-under-test")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def counts(url: str) -> tuple[int, int, int, int]:
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT (SELECT count(*) FROM readings),"
            " (SELECT count(*) FROM (SELECT DISTINCT ts, device_id, metric FROM readings) d),"
            " (SELECT count(*) FROM events), (SELECT count(*) FROM ingest_records)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])


async def test_duplicates_dropped_across_flushes_and_lanes(db_url: str) -> None:
    migrate(db_url)
    m = BackendMetrics()
    ingest = Ingest(db_url, m, batch_max_records=100, batch_wait_ms=5)
    a, b = SimOutbox("gw-a", 300), SimOutbox("gw-b", 200, boot="other")
    h = Harness(ingest, [a, b])
    async with running(ingest, h):
        await h.send_unacked()
        await eventually(h.done, what="every record acknowledged")
        # Everything again, as after a lost confirmation: all dropped, all confirmed again.
        a.unacked = set(a.bodies)
        await h.send_unacked(per_batch=33)
        await eventually(h.done, what="the redelivery acknowledged")
    readings, distinct, events, seen = counts(db_url)
    assert readings == distinct == a.expected_readings() + b.expected_readings()
    assert events == a.expected_events() + b.expected_events()
    assert seen == 500
    # Every record reached the rules; telemetry exactly once. (Events come to the rules again
    # when they come again: unacknowledged, they may never have been evaluated.)
    assert {(r.gateway_id, r.seq) for r in h.handed_on} == {("gw-a", s) for s in range(1, 301)} | {
        ("gw-b", s) for s in range(1, 201)
    }
    telemetry = [(r.gateway_id, r.seq) for r in h.handed_on if r.kind == "t"]
    assert len(telemetry) == len(set(telemetry))
    assert m.registry.get_sample_value("anju_ingest_duplicates_total") == 300
    assert m.registry.get_sample_value("anju_ingest_readings_total") == readings
    assert m.registry.get_sample_value("anju_ingest_seq_missing") == 0
    with psycopg.connect(db_url) as c:
        pairs = c.execute("SELECT count(*) FROM device_metrics").fetchone()
        assert pairs == (40,)  # 2 gateways x 5 devices x 4 metrics


async def test_events_are_not_held_behind_a_blocked_telemetry_commit(db_url: str) -> None:
    migrate(db_url)
    ingest = Ingest(db_url, BackendMetrics(), batch_wait_ms=0)
    h = Harness(ingest, [])
    tele = record_body(
        device_id="d1", kind="t", ts=T0, rx=T0, gateway_timed=False, payload={"m": {"x": 1}}
    )
    alarm = record_body(
        device_id="d1", kind="e", ts=T0, rx=T0, gateway_timed=False, payload={"e": "fire"}
    )
    async with running(ingest, h):
        with psycopg.connect(db_url) as blocker:
            blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            await ingest.submit(up_topic("gw"), encode_batch("gw", [(1, "b", tele)]))
            await ingest.submit(up_topic("gw"), encode_batch("gw", [(2, "b", alarm)]))
            await eventually(lambda: [r.seq for r in h.handed_on] == [2], what="the event")
            assert h.acked == Counter({("gw", 2): 1})  # the telemetry is not confirmed yet
            blocker.rollback()
        await eventually(lambda: len(h.handed_on) == 2, what="the telemetry after the lock")


async def test_a_record_the_database_refuses_is_rejected_alone(db_url: str) -> None:
    migrate(db_url)
    m = BackendMetrics()
    ingest = Ingest(db_url, m)
    h = Harness(ingest, [])
    recs = [
        (1, "b", record_body(device_id="d1", kind="s", ts=T0, rx=T0, gateway_timed=False,
                             payload={"s": {"online": True, "battery_pct": "lots"}})),
        (2, "b", record_body(device_id="d2", kind="s", ts=T0, rx=T0, gateway_timed=False,
                             payload={"s": {"online": True, "battery_pct": 80}})),
        (3, "b", record_body(device_id="d2", kind="e", ts=T0, rx=T0, gateway_timed=False,
                             payload={"e": "tamper"})),
    ]  # fmt: skip
    async with running(ingest, h):
        await ingest.submit(up_topic("gw"), encode_batch("gw", recs))
        await eventually(lambda: sum(h.acked.values()) >= 3, what="all three confirmed")
        # sent again: all three are now duplicates, the refused one included
        await ingest.submit(up_topic("gw"), encode_batch("gw", recs))
        await eventually(lambda: sum(h.acked.values()) >= 6, what="confirmed again")
    # Refused (1) never reaches the rules; the event (3) does again when it comes again.
    assert sorted(r.seq for r in h.handed_on) == [2, 3, 3]
    assert m.registry.get_sample_value("anju_ingest_rejected_total", {"reason": "db_refused"}) == 1
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT device_id FROM device_status").fetchall() == [("d2",)]


async def test_exactly_once_across_a_database_restart(tmp_path: Path) -> None:
    pg = PrivatePostgres(tmp_path / "pg").start()
    try:
        url = pg.url()
        migrate(url)
        m = BackendMetrics()
        ingest = Ingest(url, m, batch_max_records=200, batch_wait_ms=5, telemetry_wait_ms=50)
        boxes = [SimOutbox(f"gw-{i}", 1500, step_ms=100) for i in range(3)]
        h = Harness(ingest, boxes)
        async with running(ingest, h):
            rounds = 0
            while not h.done():
                await h.send_unacked(per_batch=40)
                rounds += 1
                if rounds == 1:
                    await asyncio.to_thread(pg.stop)  # mid-stream: flushes in flight fail
                    unacked_while_down = sum(len(b.unacked) for b in boxes)
                    await asyncio.sleep(1.0)
                    # nothing is confirmed while the database is away
                    assert sum(len(b.unacked) for b in boxes) == unacked_while_down
                    await asyncio.to_thread(pg.start)
                await asyncio.sleep(0.5)
                assert rounds < 200, "the ingest did not catch up"
        readings, distinct, events, seen = counts(url)
        assert readings == distinct == sum(b.expected_readings() for b in boxes)
        assert events == sum(b.expected_events() for b in boxes)
        assert seen == 4500
        assert (m.registry.get_sample_value("anju_ingest_db_errors_total") or 0) >= 1
    finally:
        pg.destroy()
