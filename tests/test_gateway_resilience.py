"""The gateway under failure, on real servers: every record the devices sent (and the LAN broker
acknowledged) is in PostgreSQL exactly once at the end.

Real Mosquitto (LAN and uplink), real PostgreSQL, the real backend in-process; the gateway
in-process, or as a subprocess (``python -m anju gateway run``) where it is killed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from anju.now import now_ms
from anju.servers import PrivateMosquitto
from tests.support import GatewayProcess, eventually, running_backend, running_gateway

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
ELEV = "jx-nh-0001-elev-03"
SMOKE = "jx-nh-0001-smoke-3-1201"


def gateway_doc(
    lan: PrivateMosquitto, up: PrivateMosquitto, tmp: Path, **outbox: Any
) -> dict[str, Any]:
    return {
        "gateway_id": GW,
        "lan": {"url": lan.url},
        "uplink": {"url": up.url, "backoff_base_s": 0.2, "backoff_cap_s": 1.0},
        "outbox": {"path": str(tmp / "outbox.sqlite3"), "resend_after_s": 2, **outbox},
        "devices": [ELEV, SMOKE],
        "status_every_s": 0.2,
    }


class Devices:
    """Devices on the LAN broker publishing numbered readings with QoS 1; remembers which
    messages the broker acknowledged (PUBACK)."""

    def __init__(self, lan: PrivateMosquitto) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="devices-under-test")
        self.c.connect("127.0.0.1", lan.port)
        self.c.loop_start()
        self.next_n = 0
        self.acked: list[int] = []  # reading numbers whose message got a PUBACK
        self.t0 = now_ms() - 3_600_000

    def send(self, messages: int, per_message: int = 10) -> None:
        for _ in range(messages):
            ns = list(range(self.next_n, self.next_n + per_message))
            self.next_n += per_message
            payload = [{"ts": self.t0 + n, "metrics": {"n": n}} for n in ns]
            info = self.c.publish(f"anju/dev/{ELEV}/telemetry", json.dumps(payload), qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
            self.acked.extend(ns)

    def alarm(self) -> None:
        body = {"ts": now_ms(), "type": "alarm", "data": {"smoke": True}}
        self.c.publish(f"anju/dev/{SMOKE}/event", json.dumps(body), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def stored_numbers(db_url: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        try:
            rows = conn.execute("SELECT num FROM readings WHERE metric = 'n'").fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return sorted(int(r[0]) for r in rows)


async def all_arrive_exactly_once(db_url: str, expected: list[int], within: float = 90) -> None:
    want = sorted(expected)
    await eventually(lambda: len(stored_numbers(db_url)) >= len(want), within, "every reading")
    await asyncio.sleep(0.5)  # anything duplicated would have landed by now
    got = stored_numbers(db_url)
    assert len(got) == len(set(got)), "a reading is stored twice"
    assert got == want


async def test_uplink_broker_restarts_while_devices_send(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    doc = gateway_doc(lan_broker, broker, tmp_path)
    async with running_backend(db_url, broker, city_file), running_gateway(doc) as gw:
        dev = Devices(lan_broker)
        try:
            await asyncio.to_thread(dev.send, 100)
            broker.stop()
            await asyncio.to_thread(dev.send, 100)  # the broker is down: into the outbox
            await eventually(lambda: not gw.uplink_ready.is_set(), 10, "the link to drop")
            broker.start()
            await asyncio.to_thread(dev.send, 100)
            await all_arrive_exactly_once(db_url, dev.acked)
        finally:
            dev.close()
    connects = gw.metrics.registry.get_sample_value("anju_gateway_uplink_connects_total")
    assert (connects or 0) >= 2


async def test_backend_down_and_restarted(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    doc = gateway_doc(lan_broker, broker, tmp_path)
    async with running_gateway(doc, wait_uplink=False) as gw:
        dev = Devices(lan_broker)
        try:
            async with running_backend(db_url, broker, city_file):
                await asyncio.to_thread(dev.send, 100)
                await eventually(lambda: len(stored_numbers(db_url)) == 1000, what="first 1000")
            # No backend, no confirmations: the gateway keeps everything and resends.
            await asyncio.to_thread(dev.send, 150)
            await eventually(lambda: gw.outbox.depth().telemetry >= 1500, what="the outbox")
            await asyncio.sleep(2.5)  # past resend_after_s: resends pile up at the broker
            assert gw.outbox.depth().telemetry >= 1500
            async with running_backend(db_url, broker, city_file):
                await all_arrive_exactly_once(db_url, dev.acked)
                await eventually(lambda: gw.outbox.depth().telemetry == 0, what="the outbox")
        finally:
            dev.close()
    assert (gw.metrics.registry.get_sample_value("anju_gateway_resent_records_total") or 0) > 0


async def test_gateway_killed_mid_burst(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    gwp = GatewayProcess(gateway_doc(lan_broker, broker, tmp_path), tmp_path)
    async with running_backend(db_url, broker, city_file):
        gwp.start()
        dev = Devices(lan_broker)
        try:
            await eventually(gwp.lan_ready, 20, "the gateway process")
            burst = asyncio.create_task(asyncio.to_thread(dev.send, 400), name="burst")
            await eventually(lambda: len(dev.acked) >= 1500, what="half the burst")
            gwp.kill()
            await burst  # the LAN broker keeps the gateway's messages in its session
            gwp.start()
            await all_arrive_exactly_once(db_url, dev.acked)
        finally:
            dev.close()
            gwp.stop()


def tear_last_write(wal: Path) -> None:
    """A power cut during a write: the WAL ends with half a frame (the beginning of the last
    complete frame written again, cut in the middle), as a write that never completed."""
    data = wal.read_bytes()
    page = int.from_bytes(data[8:12], "big")
    frame = 24 + page
    n = (len(data) - 32) // frame
    assert n >= 1, "the WAL holds no frame"
    last = data[32 + (n - 1) * frame : 32 + n * frame]
    with open(wal, "ab") as f:
        f.write(last[: frame // 2])


def power_cut(outbox: Path) -> None:
    tear_last_write(Path(f"{outbox}-wal"))
    Path(f"{outbox}-shm").unlink(missing_ok=True)  # shared memory does not survive a reboot


async def test_torn_last_write_after_power_cut(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    doc = gateway_doc(lan_broker, broker, tmp_path)
    gwp = GatewayProcess(doc, tmp_path)
    outbox = Path(doc["outbox"]["path"])
    broker.stop()  # no uplink: the outbox keeps everything, the WAL is busy
    gwp.start()
    dev = Devices(lan_broker)
    try:
        await eventually(gwp.lan_ready, 20, "the gateway process")
        burst = asyncio.create_task(asyncio.to_thread(dev.send, 300), name="burst")
        await eventually(lambda: len(dev.acked) >= 1500, what="half the burst")
        gwp.kill()  # the power goes
        await burst
        power_cut(outbox)
        broker.start()
        async with running_backend(db_url, broker, city_file):
            gwp.start()
            await all_arrive_exactly_once(db_url, dev.acked)
    finally:
        dev.close()
        gwp.stop()


async def test_fire_alarm_overtakes_a_telemetry_replay(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    doc = gateway_doc(lan_broker, broker, tmp_path, replay_rate=400, batch_max=100)
    broker.stop()  # an outage: the backlog builds up
    async with running_gateway(doc, wait_uplink=False) as gw:
        dev = Devices(lan_broker)
        try:
            await asyncio.to_thread(dev.send, 100, 40)
            await eventually(lambda: gw.outbox.depth().telemetry == 4000, what="the backlog")
            broker.start()
            async with running_backend(db_url, broker, city_file):
                await eventually(lambda: len(stored_numbers(db_url)) > 0, what="the replay")
                dev.alarm()
                await eventually(lambda: alarm_stored(db_url), what="the alarm")
                # Readings only grow: counted after the alarm is seen, this bounds what was
                # stored when the alarm was committed.
                replayed_by_then = len(stored_numbers(db_url))
                await all_arrive_exactly_once(db_url, dev.acked)
        finally:
            dev.close()
    # The alarm was committed while most of the 4,000-reading backlog was still to come.
    assert replayed_by_then < 2000


def alarm_stored(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE device_id = %s", (SMOKE,)).fetchone()
    return bool(row and row[0])
