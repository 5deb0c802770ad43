"""Issue 10 on a real Mosquitto and PostgreSQL: nothing a device or a gateway sends stops the
alarm path.

Each test was first run against the code before the fix (where it failed: the backend exited
on a NUL in rule state, resends of a poison batch were never confirmed, another gateway could
raise an alarm, a refused alert change was dropped, committed telemetry was never evaluated
after a crash) and then against the fix.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest

from anju.cli import main as cli
from anju.contract import Severity
from anju.now import now_ms
from anju.servers import PrivateMosquitto
from anju.uplink import Record, encode_batch, record_body, up_topic
from backend.alerting.model import Raise
from backend.db.migrate import migrate
from backend.desk import waited
from backend.ingest import Ingest
from backend.metrics import BackendMetrics
from backend.service import Backend
from tests.support import Subscriber, eventually, running_backend

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
GW2 = "gw-jx-xz-0001-a"
ELEV = "jx-nh-0001-elev-03"
SMOKE = "jx-nh-0001-smoke-3-1201"
SMOKE2 = "jx-nh-0001-smoke-3-0801"
FIRE = "anju/alerts/fire/#"


def body(device: str, kind: Any, payload: dict[str, Any], ts: int | None = None) -> str:
    t = now_ms() if ts is None else ts
    return record_body(
        device_id=device, kind=kind, ts=t, rx=t, gateway_timed=False, payload=payload
    )


def raw_body(device: str, kind: str, extra: str) -> str:
    """A record body written by hand (what no encoder would produce)."""
    t = now_ms()
    return f'{{"d":"{device}","k":"{kind}","ts":{t},"rx":{t},{extra}}}'


class Acks:
    """Collects the seqs confirmed to each gateway."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: dict[str, list[int]] = {}
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as c:
            await c.subscribe("anju/gw/+/ack", qos=1)
            self.ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                doc = json.loads(m.payload)
                gw = m.topic.value.split("/")[2]
                self.got.setdefault(gw, []).extend(doc["seqs"])

    def has(self, gw: str, *seqs: int) -> bool:
        return set(seqs) <= set(self.got.get(gw, []))


@asynccontextmanager
async def listening(port: int, *filters: str) -> AsyncIterator[tuple[Subscriber, Acks]]:
    sub, acks = Subscriber(port, *filters), Acks(port)
    tasks = [asyncio.create_task(sub.run()), asyncio.create_task(acks.run())]
    try:
        await asyncio.wait_for(sub.ready.wait(), 10)
        await asyncio.wait_for(acks.ready.wait(), 10)
        yield sub, acks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def serving(
    db_url: str, broker: PrivateMosquitto, city: Path
) -> AsyncIterator[tuple[Backend, Subscriber, Acks]]:
    """A backend, the fire department's subscriber and the gateways' acks."""
    async with (
        running_backend(db_url, broker, city) as backend,
        listening(broker.port, FIRE) as (sub, acks),
    ):
        yield backend, sub, acks


async def publish(port: int, topic: str, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as c:
        await c.publish(topic, payload, qos=1)


async def fire_alarm_arrives(
    port: int, sub: Subscriber, acks: Acks, boot: str, seq: int, device: str = SMOKE
) -> None:
    """An alarm from ``device`` reaches the fire department's topic (a raise or an update)."""
    before = len(sub.of_type("fire.alarm"))
    batch = encode_batch(GW, [(seq, boot, body(device, "e", {"e": "alarm", "x": {}}))])
    await publish(port, up_topic(GW, events=True), batch)
    await eventually(lambda: acks.has(GW, seq), 30, f"the alarm's ack (seq {seq})")
    await eventually(lambda: len(sub.of_type("fire.alarm")) > before, 30, "the fire alarm")


def alive(backend: Backend) -> bool:
    return not backend.alarm.finished.done()


async def test_nul_and_lone_surrogates_do_not_stop_the_backend(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    boot = uuid.uuid4().hex
    async with serving(db_url, broker, city_file) as (backend, sub, acks):
        tele = [
            (1, boot, body(ELEV, "t", {"m": {"door": "clo\u0000sed", "floor": 1}})),
            (2, boot, raw_body(ELEV, "t", '"m":{"door":"\\ud800","x\\u0000":"\\udfff"}')),
        ]
        await publish(broker.port, up_topic(GW), encode_batch(GW, tele))
        events = [
            (3, boot, body(SMOKE2, "e", {"e": "fault", "x": {"note": "a\u0000b"}})),
            (4, boot, raw_body(SMOKE2, "e", '"e":"fault","x":{"n":"\\ud800\\u0000"}')),
        ]
        await publish(broker.port, up_topic(GW, events=True), encode_batch(GW, events))
        await eventually(lambda: acks.has(GW, 1, 2, 3, 4), 30, "acks of the NUL records")
        await fire_alarm_arrives(broker.port, sub, acks, boot, 5)
        assert alive(backend)
    with psycopg.connect(db_url) as conn:
        doc = conn.execute("SELECT doc FROM alert_rule_state WHERE key = %s", (ELEV,)).fetchone()
        assert doc is not None and doc[0]["values"]["door"] == "\ufffd"
        assert "x\ufffd" in doc[0]["values"]
        stored = conn.execute("SELECT count(*) FROM events WHERE device_id = %s", (SMOKE2,))
        assert stored.fetchone() == (2,)


async def test_poison_batches_end_and_are_dead_lettered(
    db_url: str, broker: PrivateMosquitto, city_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boot = uuid.uuid4().hex
    deep = '"m":{"x":' + "[" * 100_000 + "]" * 100_000 + "}"
    recs = [
        (1, boot, body(ELEV, "t", {"m": {"floor": 2}})),
        (2, boot, raw_body(ELEV, "t", deep)),
        (3, boot, raw_body(ELEV, "t", '"m":{"x":' + "9" * 5000 + "}")),
        (4, boot, raw_body(ELEV, "t", '"m":{"door":"\\ud800"}')),
        (5, boot, body(ELEV, "t", {"m": {"floor": 3}})),
    ]
    async with serving(db_url, broker, city_file) as (backend, sub, acks):
        for _ in range(2):  # the gateway sends it again: confirmed again, counted once
            await publish(broker.port, up_topic(GW), encode_batch(GW, recs))
            await eventually(lambda: acks.has(GW, 1, 2, 3, 4, 5), 30, "every seq acked")
            acks.got.clear()
        # Batches that cannot be attributed: kept, nothing confirmed.
        await publish(broker.port, up_topic(GW), b'{"v":1,"gw":"' + GW2.encode() + b'"}')
        await publish(broker.port, up_topic(GW), b"\x01not zlib")
        await publish(broker.port, up_topic(GW), b"[" * 200_000)
        await fire_alarm_arrives(broker.port, sub, acks, boot, 6)
        assert alive(backend)

        def letters() -> list[tuple[Any, ...]]:
            with psycopg.connect(db_url) as conn:
                q = "SELECT reason, seq, count FROM dead_letters ORDER BY reason, seq NULLS FIRST"
                return conn.execute(q).fetchall()

        await eventually(lambda: len(letters()) == 5, 30, "five dead letters")
        assert letters() == [
            ("bad_batch", None, 1),
            ("bad_compression", None, 1),
            ("bad_number", 3, 2),
            ("too_deep", None, 1),
            ("too_deep", 2, 2),
        ]
        rejected = backend.metrics.rejected
        assert rejected.labels("too_deep")._value.get() == 3
        # What an operator sees: the admin API and the command line.
        url = f"http://127.0.0.1:{backend.settings.api_port}/api/ingest/dead-letters"
        async with httpx.AsyncClient() as http:
            listed = (await http.get(url, params={"reason": "too_deep"})).json()
        assert sorted(str(d["seq"]) for d in listed) == ["2", "None"]
    assert await asyncio.to_thread(cli, ["backend", "dead-letters", "--db", db_url]) == 0
    out = capsys.readouterr().out
    assert "bad_number" in out and f"{GW}/{boot}/3  x2  (confirmed)" in out
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT txt, num FROM readings WHERE device_id = %s ORDER BY ts, metric", (ELEV,)
        ).fetchall()
        assert ("\ufffd", None) in rows and (None, 2.0) in rows and (None, 3.0) in rows


async def test_a_gateway_speaks_only_for_its_own_devices(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    boot = uuid.uuid4().hex
    async with serving(db_url, broker, city_file) as (backend, sub, acks):
        # Another community's gateway raising an alarm on this community's detector.
        forged = encode_batch(GW2, [(1, boot, body(SMOKE, "e", {"e": "alarm", "x": {}}))])
        await publish(broker.port, up_topic(GW2, events=True), forged)
        await eventually(lambda: acks.has(GW2, 1), 30, "the forged record confirmed")
        await fire_alarm_arrives(broker.port, sub, acks, boot, 7, device=SMOKE2)
        assert [p["device_id"] for _t, p in sub.of_type("fire.alarm")] == [SMOKE2]
        assert backend.metrics.rejected.labels("foreign_device")._value.get() == 1
    with psycopg.connect(db_url) as conn:
        q = "SELECT reason, gateway_id, device_id FROM dead_letters"
        assert conn.execute(q).fetchall() == [("foreign_device", GW2, SMOKE)]
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)


async def test_a_refused_alert_change_or_rule_state_is_stored_not_dropped(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    async with serving(db_url, broker, city_file) as (backend, sub, _acks):
        desk = backend.desk
        with desk.lock:
            dev = desk.engine.devices[SMOKE]
            evidence = {"trigger": "smoke\u0000", "x\ud800": "-"}
            decision = Raise("fire.alarm", Severity.CRITICAL, "火警", now_ms(), evidence)
            change = desk.engine.book.raise_(dev, decision, now_ms())
            assert change is not None
            stored = desk.keeper.put([(change, None)])
            state = desk.states.submit({"probe": '{"a":"\\u0000b"}', "ok": '{"a":1}'})
        await waited(stored)
        await waited(state)
        await eventually(lambda: len(sub.of_type("fire.alarm")) == 1, 30, "the alarm published")
        assert alive(backend)
    with psycopg.connect(db_url) as conn:
        (payload,) = conn.execute("SELECT payload FROM alerts").fetchone() or (None,)
        assert payload["evidence"] == {"trigger": "smoke\ufffd", "x\ufffd": "-"}
        assert conn.execute("SELECT count(*) FROM alert_audit").fetchone() == (1,)
        docs: dict[str, Any] = dict(
            conn.execute("SELECT key, doc FROM alert_rule_state").fetchall()
        )
        assert docs["probe"] == {"a": "\ufffdb"} and docs["ok"] == {"a": 1}


async def test_committed_telemetry_is_evaluated_after_a_crash_exactly_once(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    await asyncio.to_thread(migrate, db_url)
    boot = uuid.uuid4().hex
    batch = encode_batch(GW, [(1, boot, body(SMOKE, "t", {"m": {"smoke": True}}))])

    async def ingest_once(on_committed: Any) -> None:
        ingest = Ingest(db_url, BackendMetrics())
        task = asyncio.create_task(ingest.run(on_committed))
        try:
            await ingest.submit(up_topic(GW), batch)
            async with asyncio.timeout(20):
                await done.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # A backend that commits the reading and is killed before its rules run (no ack).
    done = asyncio.Event()

    async def killed(_new: list[Record], _acks: dict[str, list[int]]) -> None:
        done.set()
        await asyncio.Event().wait()

    await ingest_once(killed)

    # The next backend: the gateway sends it again; a duplicate, and evaluated.
    async with serving(db_url, broker, city_file) as (_backend, sub, acks):
        await publish(broker.port, up_topic(GW), batch)
        await eventually(lambda: acks.has(GW, 1), 30, "the ack")
        await eventually(lambda: len(sub.of_type("fire.alarm")) == 1, 30, "the fire alarm")

    # Evaluated once: sent again after that, it is a duplicate the rules do not get.
    done = asyncio.Event()
    to_rules: list[Record] = []

    async def rules(new: list[Record], _acks: dict[str, list[int]]) -> None:
        to_rules.extend(new)
        done.set()

    await ingest_once(rules)
    assert to_rules == []
    with psycopg.connect(db_url) as conn:
        q = "SELECT evaluated::text FROM ingest_evaluated WHERE boot_id = %s"
        assert conn.execute(q, (boot,)).fetchone() == ("{[1,2)}",)
