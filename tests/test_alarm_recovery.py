"""An alarm committed by a backend that died before its rules ran is not lost: the gateway,
never acknowledged, sends it again, and the next ingest hands it to the rules although the
database already has it (and stores it only once)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from anju.uplink import Record, encode_batch, record_body, up_topic
from backend.db.migrate import migrate
from backend.ingest import Ingest
from backend.metrics import BackendMetrics

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
SMOKE = "jx-nh-0001-smoke-3-1201"


async def test_a_committed_but_unevaluated_alarm_reaches_the_rules_when_resent(
    db_url: str,
) -> None:
    ts = int(time.time() * 1000) - 5_000
    body = record_body(
        device_id=SMOKE,
        kind="e",
        ts=ts,
        rx=ts,
        gateway_timed=False,
        payload={"e": "alarm", "x": {}},
    )
    telemetry = record_body(
        device_id=SMOKE,
        kind="t",
        ts=ts,
        rx=ts,
        gateway_timed=False,
        payload={"m": {"smoke": False}},
    )
    await asyncio.to_thread(migrate, db_url)

    async def run_ingest(on_committed: object, batches: list[tuple[str, bytes]]) -> None:
        ingest = Ingest(db_url, BackendMetrics())
        task = asyncio.create_task(ingest.run(on_committed), name="ingest")  # type: ignore[arg-type]
        try:
            for topic, payload in batches:
                await ingest.submit(topic, payload)
            async with asyncio.timeout(20):
                await done.wait()
        finally:
            task.cancel()
            async with asyncio.timeout(20):
                await asyncio.gather(task, return_exceptions=True)

    events = (up_topic(GW, events=True), encode_batch(GW, [(1, "boot-1", body)]))
    tel = (up_topic(GW), encode_batch(GW, [(2, "boot-1", telemetry)]))

    # A backend that commits the alarm and dies before its rules run (no ack either).
    done = asyncio.Event()

    async def died_before_rules(_new: list[Record], _acks: dict[str, list[int]]) -> None:
        done.set()
        await asyncio.Event().wait()

    await run_ingest(died_before_rules, [events])

    # The next backend; the gateway sends everything unacknowledged again.
    done = asyncio.Event()
    to_rules: list[Record] = []

    async def rules(new: list[Record], _acks: dict[str, list[int]]) -> None:
        to_rules.extend(new)
        if any(r.kind == "e" for r in to_rules) and any(r.kind == "t" for r in to_rules):
            done.set()

    await run_ingest(rules, [tel, events])
    assert sorted((r.kind, r.seq) for r in to_rules) == [("e", 1), ("t", 2)]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)  # stored once
