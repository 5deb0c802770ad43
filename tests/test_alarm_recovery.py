"""An alarm committed by a backend that died before its rules ran is not lost: the gateway,
never acknowledged, sends it again, and the next backend evaluates it although it is a
duplicate in the database."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from anju.servers import PrivateMosquitto, free_port
from anju.uplink import Record, encode_batch, record_body, up_topic
from backend.config import BackendSettings
from backend.db.migrate import migrate
from backend.ingest import Ingest
from backend.metrics import BackendMetrics
from backend.service import Backend

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
SMOKE = "jx-nh-0001-smoke-3-1201"


async def test_a_committed_but_unevaluated_alarm_is_raised_when_resent(
    db_url: str, broker: PrivateMosquitto, city_file: Path
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
    batch = encode_batch(GW, [(1, "boot-1", body)])

    # A backend that commits the alarm and dies before its rules run (and before any ack).
    await asyncio.to_thread(migrate, db_url)
    committed = asyncio.Event()

    async def died_before_rules(_new: list[Record], _acks: dict[str, list[int]]) -> None:
        committed.set()
        await asyncio.Event().wait()  # never evaluates, never acknowledges

    ingest = Ingest(db_url, BackendMetrics())
    task = asyncio.create_task(ingest.run(died_before_rules), name="dying-ingest")
    await ingest.submit(up_topic(GW, events=True), batch)
    await asyncio.wait_for(committed.wait(), 20)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)

    # The next backend; the gateway sends the unacknowledged alarm again.
    backend = Backend(
        BackendSettings(
            database_url=db_url, mqtt_url=broker.url, registry=city_file, api_port=free_port()
        )
    )
    stop = asyncio.Event()
    run = asyncio.create_task(backend.run(stop), name="next-backend")
    try:
        await asyncio.wait_for(backend.started.wait(), 30)
        async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
            await sub.subscribe("anju/alerts/fire/330402/#", qos=1)
            async with aiomqtt.Client("127.0.0.1", broker.port) as gw:
                await gw.publish(up_topic(GW, events=True), batch, qos=1)
            async with asyncio.timeout(20):
                async for msg in sub.messages:
                    assert isinstance(msg.payload, bytes)
                    alert = json.loads(msg.payload)
                    if alert["type"] == "fire.alarm" and alert["device_id"] == SMOKE:
                        break
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)  # not twice
    finally:
        stop.set()
        await asyncio.wait_for(run, 15)
