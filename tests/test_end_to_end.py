"""The whole path on real servers: device on the LAN broker -> gateway (outbox) -> uplink ->
backend (COPY, duplicates dropped) -> rules -> alert topics per audience."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from anju.servers import PrivateMosquitto
from anju.uplink import encode_batch, record_body, up_topic
from gateway import GatewayConfig
from tests.support import Subscriber, eventually, running_backend, running_gateway

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
ELEV = "jx-nh-0001-elev-03"
SMOKE = "jx-nh-0001-smoke-3-1201"
PAYLOAD_KEYS = {
    "id",
    "type",
    "severity",
    "state",
    "title",
    "device_id",
    "device_kind",
    "community_id",
    "community_name",
    "district",
    "building",
    "location",
    "occurred_at",
    "raised_at",
    "updated_at",
    "evidence",
    "audiences",
    "acks",
}


def device_publisher(lan: PrivateMosquitto) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="devices-under-test")
    c.connect("127.0.0.1", lan.port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, topic: str, payload: Any, qos: int = 1) -> None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    c.publish(topic, raw, qos=qos).wait_for_publish(5)


async def test_device_to_department_end_to_end(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    market_nh = Subscriber(broker.port, "anju/alerts/market_supervision/330402/#")
    fire_nh = Subscriber(broker.port, "anju/alerts/fire/330402/#")
    maint = Subscriber(broker.port, "anju/alerts/maintenance/org-otis-jx/#")
    prop = Subscriber(broker.port, "anju/alerts/property/org-greentown-jx/#")
    # Another district's departments and another property company must receive nothing.
    others = Subscriber(
        broker.port,
        "anju/alerts/fire/330411/#",
        "anju/alerts/market_supervision/330411/#",
        "anju/alerts/property/org-vanke-jx/#",
        "anju/alerts/community/jx-xz-0001/#",
    )
    subs = [market_nh, fire_nh, maint, prop, others]
    sub_tasks = [asyncio.create_task(s.run(), name=f"sub-{i}") for i, s in enumerate(subs)]
    for s in subs:
        await asyncio.wait_for(s.ready.wait(), 10)

    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": GW,
            "lan": {"url": lan_broker.url},
            "uplink": {"url": broker.url},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3"), "resend_after_s": 2},
            "devices": [ELEV, SMOKE, "jx-nh-0001-smoke-3-0801"],
        }
    )
    async with running_backend(db_url, broker, city_file) as backend, running_gateway(cfg) as gw:
        dev = device_publisher(lan_broker)
        try:
            # Garbage first: it must be counted and must not stop anything.
            publish(dev, f"anju/dev/{ELEV}/telemetry", b"{not json")
            publish(dev, f"anju/dev/{ELEV}/telemetry", {"ts": "noon", "metrics": {"floor": 1}})
            publish(dev, f"anju/dev/{ELEV}/telemetry", {"metrics": {"floor": {"x": 1}}})
            publish(dev, "anju/dev/intruder-01/event", {"type": "alarm"})
            t0 = int(time.time() * 1000) - 60_000
            stuck = {
                "moving": False,
                "door": "closed",
                "passenger": True,
                "in_door_zone": False,
                "floor": 7,
            }
            publish(
                dev,
                f"anju/dev/{ELEV}/telemetry",
                {"ts": t0, "metrics": {**stuck, "moving": True, "floor": 6}},
            )
            publish(
                dev,
                f"anju/dev/{ELEV}/telemetry",
                [{"ts": t0 + 1000, "metrics": stuck}, {"ts": t0 + 31_000, "metrics": stuck}],
            )
            publish(
                dev, f"anju/dev/{SMOKE}/event", {"ts": t0 + 40_000, "type": "alarm", "data": {}}
            )
            publish(
                dev, f"anju/dev/{SMOKE}/status", {"online": True, "fw": "2.1", "battery_pct": 91}
            )

            await eventually(lambda: bool(market_nh.of_type("elevator.trapped")), what="trapped")
            await eventually(lambda: bool(fire_nh.of_type("fire.alarm")), what="fire alarm")
            await eventually(lambda: len(prop.got) >= 2 and len(maint.got) >= 1, what="companies")
            await eventually(
                lambda: gw.outbox.depth().events + gw.outbox.depth().telemetry == 0,
                what="the outbox to empty",
            )

            [(topic, trapped)] = market_nh.of_type("elevator.trapped")
            assert topic == "anju/alerts/market_supervision/330402/jx-nh-0001/elevator.trapped"
            assert set(trapped) == PAYLOAD_KEYS
            assert (trapped["severity"], trapped["state"], trapped["device_id"]) == (
                "critical",
                "raised",
                ELEV,
            )
            assert trapped["evidence"]["stopped_s"] == 30.0
            assert trapped["occurred_at"].endswith("+08:00")
            assert {(a["audience"], a["scope"]) for a in trapped["audiences"]} == {
                ("market_supervision", "330402"),
                ("maintenance", "org-otis-jx"),
                ("property", "org-greentown-jx"),
                ("community", "jx-nh-0001"),
            }
            [(ftopic, fire)] = fire_nh.of_type("fire.alarm")
            assert ftopic == "anju/alerts/fire/330402/jx-nh-0001/fire.alarm"
            assert fire["device_kind"] == "smoke_detector" and fire["building"] == "3"
            assert {t for t, _ in prop.got} == {
                "anju/alerts/property/org-greentown-jx/jx-nh-0001/elevator.trapped",
                "anju/alerts/property/org-greentown-jx/jx-nh-0001/fire.alarm",
            }
            assert [p["type"] for _, p in maint.got] == ["elevator.trapped"]

            # The gateway counted each kind of garbage.
            def rejected(reason: str) -> float:
                v = gw.metrics.registry.get_sample_value(
                    "anju_gateway_rejected_total", {"reason": reason}
                )
                return v or 0.0

            assert rejected("bad_json") == 1
            assert rejected("bad_ts") == 1
            assert rejected("bad_metric") == 1
            assert rejected("unknown_device") == 1

            # Redelivery of records already committed is dropped, and acknowledged again.
            body = record_body(
                device_id=ELEV,
                kind="t",
                ts=t0,
                rx=t0,
                gateway_timed=False,
                payload={"m": {"floor": 99}},
            )
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.publish(up_topic(GW), encode_batch(GW, [(1, gw.boot_id, body)]), qos=1)
            await eventually(
                lambda: (
                    (backend.metrics.registry.get_sample_value("anju_ingest_duplicates_total") or 0)
                    >= 1
                ),
                what="the duplicate to be counted",
            )
        finally:
            dev.loop_stop()
            dev.disconnect()

    with psycopg.connect(db_url) as conn:
        readings = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE metric = 'floor' AND num = 99) FROM readings"
        ).fetchone()
        assert readings == (15, 0)  # three telemetry readings of five metrics, no duplicate
        assert conn.execute("SELECT type, device_id FROM events").fetchall() == [("alarm", SMOKE)]
        assert conn.execute("SELECT count(*) FROM ingest_records").fetchone() == (5,)
        assert conn.execute(
            "SELECT online, fw, battery_pct FROM device_status WHERE device_id = %s", (SMOKE,)
        ).fetchone() == (True, "2.1", 91.0)
        # (the gateway stopping before the backend raises gateway.offline: not counted here)
        alerts = conn.execute(
            "SELECT type, state FROM alerts WHERE type <> 'gateway.offline' ORDER BY type"
        ).fetchall()
        assert alerts == [("elevator.trapped", "raised"), ("fire.alarm", "raised")]
        audit = conn.execute(
            "SELECT count(*), bool_and(published) FROM alert_audit"
            " WHERE action <> 'raised' OR entry -> 'payload' ->> 'type' <> 'gateway.offline'"
        ).fetchone()
        assert audit == (2, True)

    await asyncio.sleep(0.5)  # anything misrouted would have arrived by now
    assert others.got == []
    for t in sub_tasks:
        t.cancel()
    await asyncio.gather(*sub_tasks, return_exceptions=True)
