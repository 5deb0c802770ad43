"""The live stream (SSE) and the monitoring screen on a real backend, broker and database: a
token's stream carries the alert changes of its audience and scope, and nothing else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from anju.servers import PrivateMosquitto, free_port
from tests.test_alert_e2e import ELEV, SMOKE, Uplink, alerting_file, backend_running, now_ms

pytestmark = pytest.mark.integration

SMOKE_XZ = "jx-xz-0001-smoke-2-0101"  # Xiuzhou district (330411), another property company


async def alerts(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The ``alert`` events of an SSE stream, as payloads."""
    event = None
    async for line in lines:
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event == "alert":
            yield json.loads(line[len("data: ") :])
        elif line == "":
            event = None


async def test_stream_carries_only_what_the_token_may_see_and_the_screen_is_served(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    async with (
        backend_running(db_url, broker, city_file, alerting_file(tmp_path), port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        page = await http.get("/screen/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="screen.js">' in page.text
        js = await http.get("/screen/screen.js")
        assert js.status_code == 200 and "EventSource" in js.text

        assert (await http.get("/api/alerts/stream")).status_code == 401
        bad = await http.get("/api/alerts/stream", params={"access_token": "nope"})
        assert bad.status_code == 401

        up = Uplink(broker.port)

        def stream(token: str) -> Any:
            return http.stream("GET", "/api/alerts/stream", params={"access_token": f"tok-{token}"})

        async with (
            stream("fire-nh") as fire_nh,
            stream("fire-xz") as fire_xz,
            stream("market-nh") as market_nh,
        ):
            by_token = {"fire-nh": fire_nh, "fire-xz": fire_xz, "market-nh": market_nh}
            lines = {n: r.aiter_lines() for n, r in by_token.items()}
            for r in (fire_nh, fire_xz, market_nh):
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
            for it in lines.values():  # the opening comment: subscribed from here on
                assert (await anext(it)).startswith(": anju live alerts")

            # A fire in Nanhu: the Nanhu brigade sees it at once.
            t = now_ms()
            await up.send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
            nanhu = await anext(alerts(lines["fire-nh"]))
            assert (nanhu["type"], nanhu["state"], nanhu["device_id"]) == (
                "fire.alarm",
                "raised",
                SMOKE,
            )
            # Then a fire in Xiuzhou (another gateway) and an alarm button in a Nanhu elevator.
            # A stream delivers in order: had the Nanhu fire leaked into the Xiuzhou brigade's
            # or the market supervision's stream, it would come first there.
            xz_up = Uplink(broker.port, "gw-jx-xz-0001-a")
            await xz_up.send(SMOKE_XZ, "e", t + 1, t + 1, {"e": "alarm", "x": {}})
            first_xz = await anext(alerts(lines["fire-xz"]))
            assert (first_xz["device_id"], first_xz["district"]) == (SMOKE_XZ, "330411")
            await up.send(ELEV, "e", t + 2, t + 2, {"e": "alarm_button", "x": {}})
            first_market = await anext(alerts(lines["market-nh"]))
            assert (first_market["type"], first_market["device_id"]) == (
                "elevator.alarm_button",
                ELEV,
            )
            # And the Nanhu brigade's next event is not the Xiuzhou fire nor the elevator:
            # acknowledge its alert and that change is what comes next.
            r = await http.post(
                f"/api/alerts/{nanhu['id']}/ack",
                headers={"Authorization": "Bearer tok-fire-nh"},
                json={"by": "119 desk"},
            )
            assert r.status_code == 200
            after = await anext(alerts(lines["fire-nh"]))
            assert (after["id"], after["state"]) == (nanhu["id"], "acknowledged")
