"""Several backend workers (issue 11, docs/scaling.md) on a real Mosquitto and PostgreSQL:
three ``anju backend run --group`` processes, one leading; a gateway-like load resending what
is not confirmed; the leader SIGKILLed while an elevator's trapped timer runs on it, then
restarted; the next leader stopped cleanly. Every confirmed reading is stored once, the trapped
passenger is raised once and on time (device time), a fire alarm sent during the takeover
reaches the fire brigade within 10 s, and no alert is raised or delivered twice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest

from anju.servers import PrivateMosquitto, free_port
from anju.uplink import ack_topic, decode_ack, encode_batch, record_body, up_topic
from tests.support import Subscriber, eventually
from tests.test_ingest_support import SimOutbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
GW = "gw-jx-nh-0001-a"  # the elevator's and the smoke detector's gateway
LOAD_GW = "gw-jx-xz-0001-a"  # the generated load's
ELEV = "jx-nh-0001-elev-03"
SMOKE = "jx-nh-0001-smoke-3-1201"
GROUP = "anju-backend"


class Worker:
    def __init__(self, db_url: str, broker: PrivateMosquitto, city: Path, log: Path):
        self.port = free_port()
        self.args = [
            sys.executable, "-m", "anju", "backend", "run", "--db", db_url, "--mqtt", broker.url,
            "--registry", str(city), "--api-port", str(self.port), "--group", GROUP,
        ]  # fmt: skip
        self.log = log
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        return self.proc

    def leads(self) -> bool:
        """Only the leader serves (a standby waits for the group's lock)."""
        if self.proc.poll() is not None:
            return False
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success
        except httpx.HTTPError:
            return False


async def leader(workers: list[Worker], within: float = 60) -> Worker:
    found: list[Worker] = []

    def one() -> bool:
        found[:] = [w for w in workers if w.leads()]
        return len(found) == 1

    await eventually(one, within, "exactly one leading worker", poll=0.2)
    return found[0]


class Gateway:
    """Sends records as a gateway does: at once, and what is not confirmed again every
    ``every_s`` (the gateway's default ``resend_after_s``: an alarm sent while no worker is
    connected must wait in the broker's session, not for a resend, to arrive within 10 s)."""

    def __init__(self, client: aiomqtt.Client, gateway: str) -> None:
        self.client, self.gateway, self.boot = client, gateway, uuid.uuid4().hex
        self.bodies: dict[int, str] = {}
        self.events: dict[int, bool] = {}
        self.confirmed: set[int] = set()

    async def send(self, device: str, kind: Any, ts: int, payload: dict[str, Any]) -> int:
        seq = len(self.bodies) + 1
        self.bodies[seq] = body = record_body(
            device_id=device, kind=kind, ts=ts, rx=ts, gateway_timed=False, payload=payload
        )
        self.events[seq] = kind != "t"
        await self._publish([(seq, self.boot, body)], events=kind != "t")
        return seq

    async def _publish(self, records: list[tuple[int, str, str]], *, events: bool) -> None:
        topic = up_topic(self.gateway) + ("/e" if events else "")
        await self.client.publish(topic, encode_batch(self.gateway, records), qos=1)

    async def resend(self, every_s: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            for events in (True, False):
                todo = [
                    (s, self.boot, b)
                    for s, b in self.bodies.items()
                    if s not in self.confirmed and self.events[s] is events
                ]
                if todo:
                    await self._publish(todo, events=events)


async def gateways_sending(
    client: aiomqtt.Client,
    gw: Gateway,
    box: SimOutbox,
    load_confirmed: set[int],
    *,
    resend_every_s: float = 10.0,
) -> list[asyncio.Task[None]]:
    """The gateways of these tests on one connection: ``gw`` resending what is not confirmed,
    and the load gateway's outbox (``box``) sent in a bounded window until all confirmed;
    their acknowledgements read into ``gw.confirmed`` and ``load_confirmed``."""
    await client.subscribe(ack_topic(GW), qos=1)
    await client.subscribe(ack_topic(LOAD_GW), qos=1)

    async def read_acks() -> None:
        async for msg in client.messages:
            assert isinstance(msg.payload, bytes)
            seqs = decode_ack(msg.payload)
            if msg.topic.value == ack_topic(GW):
                gw.confirmed.update(seqs)
            else:
                load_confirmed.update(seqs)
                box.confirm(seqs)

    async def load() -> None:
        while box.unacked:
            for payload in box.batches(per_batch=100)[:10]:  # a bounded window
                await client.publish(up_topic(LOAD_GW), payload, qos=1)
            await asyncio.sleep(0.5)

    return [
        asyncio.create_task(read_acks(), name="acks"),
        asyncio.create_task(load(), name="load"),
        asyncio.create_task(gw.resend(resend_every_s), name="gateway"),
    ]


def count(db_url: str, sql: str, *args: object) -> int:
    with psycopg.connect(db_url) as c:
        row = c.execute(sql, args).fetchone()
        return int(row[0]) if row else 0


async def test_three_workers_kill_restart_and_clean_stop(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    log = tmp_path / "workers.log"
    workers = [Worker(db_url, broker, city_file, log) for _ in range(3)]
    fire = Subscriber(broker.port, "anju/alerts/fire/330402/#")
    market = Subscriber(broker.port, "anju/alerts/market_supervision/330402/#")
    subs = [asyncio.create_task(s.run(), name=f"sub-{i}") for i, s in enumerate((fire, market))]
    background: list[asyncio.Task[None]] = []
    box = SimOutbox(LOAD_GW, 4000, devices=4, metrics=5, event_every=20, step_ms=50)
    load_confirmed: set[int] = set()
    try:
        for s in (fire, market):
            await asyncio.wait_for(s.ready.wait(), 10)
        first = await leader(workers)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sim-gws") as client:
            gw = Gateway(client, GW)
            background += await gateways_sending(client, gw, box, load_confirmed)
            # The car has been stuck for 12 of its 30 s (device time) when the leader dies.
            stuck = {"moving": False, "door": "closed", "passenger": True, "in_door_zone": False}
            t0 = int(time.time() * 1000) - 12_000
            trapped = await gw.send(ELEV, "t", t0, {"m": stuck})
            await eventually(lambda: trapped in gw.confirmed, 30, "the stuck car confirmed")
            await eventually(lambda: len(load_confirmed) >= 500, 60, "some load confirmed")

            first.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.proc.wait, 10)
            sent = time.monotonic()
            await gw.send(SMOKE, "e", int(time.time() * 1000), {"e": "alarm", "x": {}})
            await eventually(
                lambda: any(p["type"] == "fire.alarm" for _, p in fire.got),
                10,
                "the fire alarm during the takeover",
            )
            took = time.monotonic() - sent
            print(f"fire alarm during the takeover: {took:.2f} s")
            second = await leader(workers)
            assert second is not first
            first.start()  # it comes back, and stands by

            await eventually(lambda: bool(market.got), 60, "the trapped alert")
            second.proc.send_signal(signal.SIGTERM)  # a clean stop hands over
            assert await asyncio.to_thread(second.proc.wait, 90) == 0
            third = await leader(workers)
            assert third is not second
            await eventually(lambda: not box.unacked, 120, "every reading confirmed")
            await eventually(lambda: len(gw.confirmed) == len(gw.bodies), 30, "all confirmed")
            await asyncio.sleep(1.0)  # any second delivery would have come by now
    finally:
        for t in background + subs:
            t.cancel()
        await asyncio.gather(*background, *subs, return_exceptions=True)
        for w in workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                await asyncio.to_thread(w.proc.wait, 60)
            except subprocess.TimeoutExpired:
                w.proc.kill()

    logtext = log.read_text(errors="replace")
    assert "Traceback" not in logtext, logtext[-3000:]
    # Every confirmed reading stored once (a duplicate would add rows).
    assert load_confirmed == set(box.bodies)
    devices = [f"{LOAD_GW}-dev-{i}" for i in range(4)]
    readings = count(db_url, "SELECT count(*) FROM readings WHERE device_id = ANY(%s)", devices)
    events = count(db_url, "SELECT count(*) FROM events WHERE device_id = ANY(%s)", devices)
    assert (readings, events) == (box.expected_readings(), box.expected_events())
    # The trapped passenger: raised once, on time across the kill.
    [(_, a)] = market.got
    assert a["type"] == "elevator.trapped" and a["state"] == "raised"
    assert 30.0 <= a["evidence"]["stopped_s"] < 32.0, a["evidence"]
    # The fire alarm: raised once, delivered once to the brigade, within 10 s of its sending.
    raised = [p for _, p in fire.got if p["type"] == "fire.alarm" and p["state"] == "raised"]
    assert len(raised) == 1, json.dumps(fire.got)[:2000]
    assert took < 10
    for t in ("fire.alarm", "elevator.trapped"):
        assert count(db_url, "SELECT count(*) FROM alerts WHERE type = %s", t) == 1
