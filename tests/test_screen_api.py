"""The read-only API behind the screens (``/api/status/*``) and the acknowledgement fixes, on a
real backend, broker and database: each token sees exactly its scope (a department its district
and its audience's device kinds), device and gateway status come from what was received, the
elevator panel's state is the newest telemetry, and acknowledgements are recorded as the
token's principal."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from anju.servers import PrivateMosquitto, free_port
from tests.support import running_backend
from tests.test_alert_e2e import ELEV, GW, SMOKE, Uplink, alerting_file, now_ms

pytestmark = pytest.mark.integration


async def test_status_routes_are_scoped_and_follow_what_was_received(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    async with (
        running_backend(db_url, broker, city_file, alerting=alerting_file(tmp_path), port=port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):

        async def get(token: str, path: str) -> Any:
            r = await http.get(path, headers={"Authorization": f"Bearer tok-{token}"})
            assert r.status_code == 200, (path, r.status_code, r.text)
            return r.json()

        assert (await http.get("/api/status/communities")).status_code == 401
        bad = await http.get("/api/status/me", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401

        me = await get("fire-xz", "/api/status/me")
        assert (me["audience"], me["scope"], me["scope_name"], me["admin"]) == (
            "fire",
            "330411",
            "秀洲区",
            False,
        )
        assert "smoke_detector" in me["kinds"] and "elevator" not in me["kinds"]
        assert me["ack_deadline_s"] == {"default": 300.0, "fire": 180.0}

        ids = {
            n: [c["id"] for c in await get(n, "/api/status/communities")]
            for n in ("greentown", "fire-xz", "fire-nh", "market-nh", "root")
        }
        assert ids == {
            "greentown": ["jx-nh-0001"],
            "fire-xz": ["jx-xz-0001"],
            "fire-nh": ["jx-nh-0001"],
            "market-nh": ["jx-nh-0001"],
            "root": ["jx-nh-0001", "jx-xz-0001"],
        }
        kinds = {
            n: sorted({d["kind"] for d in await get(n, "/api/status/devices")})
            for n in ("greentown", "fire-nh", "market-nh")
        }
        assert kinds == {
            "greentown": ["elevator", "smoke_detector"],
            "fire-nh": ["smoke_detector"],
            "market-nh": ["elevator"],
        }
        assert await get("fire-nh", "/api/status/elevators") == []

        # Nothing heard yet: unknown, never seen; then a status, a gateway state, telemetry.
        [com] = await get("greentown", "/api/status/communities")
        assert com["devices"]["unknown"] == 3 and com["gateways"][0]["last_contact"] is None
        up = Uplink(broker.port)
        t = now_ms()
        await up.send(SMOKE, "s", t, t, {"s": {"online": True, "battery_pct": 12}})
        await up.send(ELEV, "t", t, t, {"m": {"floor": 7.0, "door": "closed", "moving": False}})
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish(
                f"anju/gw/{GW}/state", json.dumps({"online": True, "boot": "b1"}), qos=1
            )

        async def settled() -> bool:
            [c] = await get("greentown", "/api/status/communities")
            [e] = await get("market-nh", "/api/status/elevators")
            return (
                c["devices"]["low_battery"] == 1
                and c["gateways"][0]["online"] is True
                and e["floor"] == 7
            )

        deadline = time.monotonic() + 20
        while not await settled():
            assert time.monotonic() < deadline, "status, gateway state and telemetry not seen"
            await asyncio.sleep(0.1)
        [com] = await get("greentown", "/api/status/communities")
        assert com["devices"] == {
            "total": 3,
            "online": 1,
            "offline": 0,
            "unknown": 2,
            "low_battery": 1,
        }
        assert com["gateways"][0]["last_contact"] is not None
        assert com["gateways"][0]["outbox_depth"] is None
        smokes = await get("greentown", "/api/status/devices?kind=smoke_detector")
        [smoke] = [d for d in smokes if d["id"] == SMOKE]
        assert (smoke["status"], smoke["battery_pct"], smoke["low_battery"]) == ("online", 12, True)
        [elev] = await get("market-nh", "/api/status/elevators")
        assert (elev["device_id"], elev["floor"], elev["door"], elev["moving"]) == (
            ELEV,
            7,
            "closed",
            False,
        )
        assert elev["floors"] == 18 and elev["open_alerts"] == []

        # A fire: admin must say for whom it acknowledges (the 422 names the choices); a
        # token's acknowledgement is recorded as its principal, with the person if given.
        await up.send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
        deadline = time.monotonic() + 20
        while True:  # stored and listed, not only raised
            listed = await get("greentown", "/api/alerts?open_only=true")
            if {a["type"] for a in listed} >= {"fire.alarm", "device.battery_low"}:
                break
            assert time.monotonic() < deadline, f"the fire and the low battery: {listed}"
            await asyncio.sleep(0.1)
        [alert] = [a for a in listed if a["type"] == "fire.alarm"]
        root = {"Authorization": "Bearer tok-root"}
        r = await http.post(f"/api/alerts/{alert['id']}/ack", headers=root, json={})
        assert r.status_code == 422 and "property" in r.json()["detail"]
        r = await http.post(
            f"/api/alerts/{alert['id']}/ack",
            headers={"Authorization": "Bearer tok-greentown"},
            json={"note": "guard sent"},
        )
        assert r.status_code == 200
        assert [(a["audience"], a["by"]) for a in r.json()["acks"]] == [("property", "greentown")]
        r = await http.post(
            f"/api/alerts/{alert['id']}/ack",
            headers=root,
            json={"audience": "fire", "by": "李"},
        )
        assert [a["by"] for a in r.json()["acks"]] == ["greentown", "李 (root)"]
        [c] = await get("greentown", "/api/status/communities")
        assert c["open_alerts"] == 2  # the fire and the smoke detector's low battery
        [c] = await get("fire-nh", "/api/status/communities")
        assert c["open_alerts"] == 2  # a smoke detector's health goes to the brigade too
        [c] = await get("market-nh", "/api/status/communities")
        assert c["open_alerts"] == 0  # neither was sent to market supervision
        [e] = await get("market-nh", "/api/status/elevators")
        assert e["open_alerts"] == []  # the fire is not the elevator's
