"""The alerting core on a real broker and a real database: routing to exactly the right
audiences, persistent sessions, escalation, a restart in the middle of a trapped timer, and
the scoped API. Records are published on the uplink as a gateway would (gateway time ``rx``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from anju.now import now_ms
from anju.servers import PrivateMosquitto, free_port
from anju.uplink import encode_batch, record_body, up_topic
from backend.service import Backend
from tests.support import Subscriber, eventually, running_backend

pytestmark = pytest.mark.integration


GW = "gw-jx-nh-0001-a"
ELEV = "jx-nh-0001-elev-03"
SMOKE = "jx-nh-0001-smoke-3-1201"
TOKENS = {
    "fire-nh": ("fire", "330402", True),
    "fire-xz": ("fire", "330411", False),
    "market-nh": ("market_supervision", "330402", False),
    "greentown": ("property", "org-greentown-jx", True),
    "root": ("admin", None, True),
}


def alerting_file(tmp_path: Path, **extra: Any) -> Path:
    doc: dict[str, Any] = {
        "tokens": [
            {
                "name": n,
                "audience": a,
                **({"scope": s} if s else {}),
                "token": f"tok-{n}",
                "resolve": r,
            }
            for n, (a, s, r) in TOKENS.items()
        ],
        **extra,
    }
    p = tmp_path / "alerting.yaml"
    p.write_text(json.dumps(doc))  # JSON is YAML
    return p


def backend_running(
    db_url: str, broker: PrivateMosquitto, city: Path, alerting: Path, port: int
) -> AbstractAsyncContextManager[Backend]:
    return running_backend(db_url, broker, city, alerting=alerting, port=port)


class Uplink:
    """Publishes records as a gateway (GW unless told) would, with a fresh boot id."""

    def __init__(self, port: int, gateway: str = GW) -> None:
        self.port = port
        self.gateway = gateway
        self.boot = uuid.uuid4().hex
        self.seq = 0

    async def send(self, device: str, kind: Any, ts: int, rx: int, payload: dict[str, Any]) -> None:
        self.seq += 1
        body = record_body(
            device_id=device, kind=kind, ts=ts, rx=rx, gateway_timed=False, payload=payload
        )
        async with aiomqtt.Client("127.0.0.1", self.port) as c:
            gw = self.gateway
            await c.publish(up_topic(gw), encode_batch(gw, [(self.seq, self.boot, body)]), qos=1)


async def _start(*subs: Subscriber) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(s.run(), name=f"sub-{i}") for i, s in enumerate(subs)]
    for s in subs:
        await asyncio.wait_for(s.ready.wait(), 10)
    return tasks


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_fire_alarm_routing_persistent_session_escalation_and_scoped_api(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    fire_nh = Subscriber(broker.port, "anju/alerts/fire/330402/#")
    prop = Subscriber(broker.port, "anju/alerts/property/org-greentown-jx/#")
    construction = Subscriber(broker.port, "anju/alerts/construction/330402/#")
    community = Subscriber(broker.port, "anju/alerts/community/jx-nh-0001/#")
    everyone = Subscriber(broker.port, "anju/alerts/#")
    tasks = await _start(fire_nh, prop, construction, community, everyone)
    # A department whose system is down during the alarm: persistent session, then away.
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="fire-nh-system", clean_session=False
    ) as c:
        await c.subscribe("anju/alerts/fire/330402/#", qos=1)
    alerting = alerting_file(tmp_path, fire_ack_deadline_s=2)
    port = free_port()
    async with backend_running(db_url, broker, city_file, alerting, port):
        up = Uplink(broker.port)
        t = now_ms()
        await up.send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
        await eventually(lambda: bool(construction.got), what="the escalation")

        # Raised to fire/330402 and the property company (and, critical, the community).
        [(topic, raised)] = [(t_, p) for t_, p in fire_nh.got if p["state"] == "raised"]
        assert topic == "anju/alerts/fire/330402/jx-nh-0001/fire.alarm"
        first_topics = {t_ for t_, p in everyone.got if p["state"] == "raised"}
        assert first_topics == {
            "anju/alerts/fire/330402/jx-nh-0001/fire.alarm",
            "anju/alerts/property/org-greentown-jx/jx-nh-0001/fire.alarm",
            "anju/alerts/community/jx-nh-0001/jx-nh-0001/fire.alarm",
        }
        # Not acknowledged by property within 2 s: escalated, also to construction.
        [(ctopic, esc)] = construction.got
        assert ctopic == "anju/alerts/construction/330402/jx-nh-0001/fire.alarm"
        assert (esc["id"], esc["state"]) == (raised["id"], "escalated")
        await eventually(lambda: any(p["state"] == "escalated" for _, p in fire_nh.got))

        # The department that was away gets both changes when it comes back.
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier="fire-nh-system", clean_session=False
        ) as c:
            got: list[str] = []
            async with asyncio.timeout(10):
                async for m in c.messages:
                    assert isinstance(m.payload, bytes)
                    got.append(json.loads(m.payload)["state"])
                    if len(got) == 2:
                        break
            assert got == ["raised", "escalated"]

        # The API, by token.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            def h(name: str) -> dict[str, str]:
                return {"Authorization": f"Bearer tok-{name}"}

            assert (await http.get("/api/alerts")).status_code == 401
            ids = {
                n: [a["id"] for a in (await http.get("/api/alerts", headers=h(n))).json()]
                for n in TOKENS
            }
            assert ids["fire-nh"] == [raised["id"]] and ids["greentown"] == [raised["id"]]
            assert ids["fire-xz"] == [] and ids["market-nh"] == []
            r = await http.post(
                f"/api/alerts/{raised['id']}/ack", headers=h("fire-xz"), json={"by": "someone"}
            )
            assert r.status_code == 404  # not theirs: not even its existence
            r = await http.post(
                f"/api/alerts/{raised['id']}/ack",
                headers=h("greentown"),
                json={"by": "王 control room", "note": "guard sent"},
            )
            assert r.status_code == 200 and r.json()["state"] == "acknowledged"
            assert [a["audience"] for a in r.json()["acks"]] == ["property"]
            r = await http.post(
                f"/api/alerts/{raised['id']}/resolve", headers=h("market-nh"), json={"by": "x"}
            )
            assert r.status_code == 404  # not theirs
            # Issue 13: the property company (resolve: true) may not resolve a fire alarm
            # sent to the fire brigade; the brigade may (backend/alerting/resolvers.py).
            r = await http.post(
                f"/api/alerts/{raised['id']}/resolve", headers=h("greentown"), json={"by": "x"}
            )
            assert r.status_code == 403
            r = await http.post(
                f"/api/alerts/{raised['id']}/resolve",
                headers=h("fire-nh"),
                json={"by": "王", "note": "false alarm: cooking"},
            )
            assert r.json()["state"] == "resolved"
            audit = await http.get(f"/api/alerts/{raised['id']}/audit", headers=h("fire-nh"))
            assert [e["action"] for e in audit.json()] == [
                "raised",
                "escalated",
                "acknowledged",
                "resolved",
            ]
            assert (
                await http.get("/api/alerts/audit/verify", headers=h("fire-nh"))
            ).status_code == 403
            v = (await http.get("/api/alerts/audit/verify", headers=h("root"))).json()
            assert (v["ok"], v["entries"], v["first_bad"], v["broken"]) == (True, 4, None, [])
        await eventually(lambda: any(p["state"] == "resolved" for _, p in prop.got))

    await asyncio.sleep(0.3)
    # Nobody outside fire/330402, the property company, the community and (escalated)
    # construction ever received it.
    assert {t_.split("/")[2] + "/" + t_.split("/")[3] for t_, _ in everyone.got} == {
        "fire/330402",
        "property/org-greentown-jx",
        "community/jx-nh-0001",
        "construction/330402",
    }
    await _stop(tasks)


async def test_restart_in_the_middle_of_the_trapped_timer_still_raises_it(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    market = Subscriber(broker.port, "anju/alerts/market_supervision/330402/#")
    tasks = await _start(market)
    alerting = alerting_file(tmp_path)
    stuck = {"moving": False, "door": "closed", "passenger": True, "in_door_zone": False}
    up = Uplink(broker.port)
    t0 = now_ms() - 22_000  # the car has been stuck for 22 of its 30 s (device time)
    async with backend_running(db_url, broker, city_file, alerting, free_port()) as b:
        await up.send(ELEV, "t", t0, t0, {"m": stuck})
        await eventually(lambda: b.engine.states[ELEV].last_ts == t0, what="the reading")
        assert b.engine.states[ELEV].since.get("elevator.trapped") == t0
    assert market.got == []  # stopped before the timer ran out
    async with backend_running(db_url, broker, city_file, alerting, free_port()) as b:
        assert b.engine.states[ELEV].since.get("elevator.trapped") == t0  # not reset
        await eventually(lambda: bool(market.got), within=30, what="the trapped alert")
    [(_, a)] = market.got
    assert a["type"] == "elevator.trapped" and a["state"] == "raised"
    occurred = a["occurred_at"]
    assert occurred.endswith("+08:00")
    # The timer counted from the first reading, across the restart.
    assert 30.0 <= a["evidence"]["stopped_s"] < 32.0
    await _stop(tasks)


async def test_telemetry_sent_on_the_events_topic_is_taken_and_alarms_go_on(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    """Not what a gateway sends, but valid: the alarm lane hands it to the telemetry lane
    (its queue belongs to the other thread's loop) instead of failing."""
    fire = Subscriber(broker.port, "anju/alerts/fire/330402/#")
    tasks = await _start(fire)
    moving = {"moving": True, "door": "closed", "passenger": False, "in_door_zone": False}
    boot = uuid.uuid4().hex
    alerting = alerting_file(tmp_path)
    async with backend_running(db_url, broker, city_file, alerting, free_port()) as b:
        t0 = now_ms()
        body = record_body(device_id=ELEV, kind="t", ts=t0, rx=t0, gateway_timed=False,
                           payload={"m": moving})  # fmt: skip
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish(up_topic(GW, events=True), encode_batch(GW, [(1, boot, body)]), qos=1)
        await eventually(lambda: b.engine.states[ELEV].last_ts == t0, what="the reading")
        t = now_ms()
        await Uplink(broker.port).send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
        await eventually(lambda: bool(fire.got), what="the fire alarm after it")
    await _stop(tasks)
