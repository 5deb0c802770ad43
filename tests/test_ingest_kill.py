"""The real backend process, fed over MQTT by a gateway-like publisher that resends what is not
confirmed, SIGKILLed during ingest and started again: nothing confirmed is lost, nothing is
stored twice."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import psycopg
import pytest

from anju.servers import PrivateMosquitto, free_port
from anju.uplink import ack_topic, decode_ack, up_topic
from tests.support import eventually
from tests.test_ingest_support import SimOutbox

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
ROOT = Path(__file__).resolve().parents[1]


def start_backend(
    db_url: str, broker: PrivateMosquitto, city: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "anju", "backend", "run", "--db", db_url, "--mqtt",
             broker.url, "--registry", str(city), "--api-port", str(free_port())],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def stored_seqs(db_url: str) -> set[int]:
    with psycopg.connect(db_url) as c:
        return {
            int(r[0])
            for r in c.execute("SELECT seq FROM ingest_records WHERE gateway_id = %s", (GW,))
        }


async def test_sigkill_during_ingest_loses_nothing_confirmed(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    box = SimOutbox(GW, 6000, devices=3, metrics=5, event_every=25, step_ms=50)
    confirmed: set[int] = set()
    log = tmp_path / "backend.log"
    proc = start_backend(db_url, broker, city_file, log)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sim-gw") as client:
            await client.subscribe(ack_topic(GW), qos=1)

            async def read_acks() -> None:
                async for msg in client.messages:
                    assert isinstance(msg.payload, bytes)
                    seqs = decode_ack(msg.payload)
                    confirmed.update(seqs)
                    box.confirm(seqs)

            async def resend_until_done() -> None:
                while box.unacked:
                    for payload in box.batches(per_batch=100)[:20]:  # a bounded window
                        await client.publish(up_topic(GW), payload, qos=1)
                    await asyncio.sleep(0.4)

            reader = asyncio.create_task(read_acks(), name="acks")
            sender = asyncio.create_task(resend_until_done(), name="gateway")
            try:
                await eventually(lambda: len(confirmed) >= 1500, 90, "the first confirmations")
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
                before_kill = set(confirmed)
                missing = before_kill - stored_seqs(db_url)
                assert not missing, f"{len(missing)} confirmed records were lost"
                assert box.unacked, "the kill came too late to test anything"
                proc = start_backend(db_url, broker, city_file, log)
                await asyncio.wait_for(sender, 120)
            finally:
                sender.cancel()
                reader.cancel()
                await asyncio.gather(sender, reader, return_exceptions=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert stored_seqs(db_url) == set(range(1, 6001))
    with psycopg.connect(db_url) as c:
        readings = c.execute(
            "SELECT count(*), count(DISTINCT (ts, device_id, metric)) FROM readings"
        ).fetchone()
        events = c.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone()
    assert readings == (box.expected_readings(), box.expected_readings())
    assert events == (box.expected_events(), box.expected_events())
