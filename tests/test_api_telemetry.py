"""The telemetry API on a real backend: answers from stored readings, scoped by token (a
department sees its district, a company its communities or devices, nobody another's)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from anju.servers import PrivateMosquitto, free_port
from anju.uplink import encode_batch, record_body, up_topic
from backend.config import BackendSettings
from backend.service import Backend

pytestmark = pytest.mark.integration

TOKENS = {
    "admin": ("admin", None),
    "fire-nh": ("fire", "330402"),
    "fire-xz": ("fire", "330411"),
    "greentown": ("property", "org-greentown-jx"),
    "vanke": ("property", "org-vanke-jx"),
    "otis": ("maintenance", "org-otis-jx"),
    "committee-nh": ("community", "jx-nh-0001"),
}
ELEV = "jx-nh-0001-elev-03"


async def test_telemetry_queries_are_scoped(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    alerting = tmp_path / "alerting.yaml"
    alerting.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"name": n, "audience": a, "scope": s, "token": n}
                    for n, (a, s) in TOKENS.items()
                ]
            }
        )
    )
    port = free_port()
    backend = Backend(
        BackendSettings(
            database_url=db_url,
            mqtt_url=broker.url,
            registry=city_file,
            api_port=port,
            alerting=alerting,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(backend.run(stop), name="backend-under-test")
    try:
        await asyncio.wait_for(backend.started.wait(), 30)
        t0 = int(time.time() * 1000) - 3_600_000
        rows = [
            (
                i + 1,
                "boot-1",
                record_body(
                    device_id=ELEV,
                    kind="t",
                    ts=t0 + i * 60_000,
                    rx=t0 + i * 60_000,
                    gateway_timed=False,
                    payload={"m": {"floor": i % 5, "door": "closed"}},
                ),
            )
            for i in range(10)
        ]
        rows.append(
            (
                11,
                "boot-1",
                record_body(
                    device_id=ELEV,
                    kind="e",
                    ts=t0 + 700_000,
                    rx=t0 + 700_000,
                    gateway_timed=False,
                    payload={"e": "fault", "x": {"code": "02"}},
                ),
            )
        )
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish(
                up_topic("gw-jx-nh-0001-a"), encode_batch("gw-jx-nh-0001-a", rows), qos=1
            )
        base = f"http://127.0.0.1:{port}/api/telemetry"
        async with httpx.AsyncClient(timeout=10) as http:

            async def get(path: str, token: str, **params: str) -> httpx.Response:
                return await http.get(
                    f"{base}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
                )

            deadline = time.monotonic() + 20
            while True:
                r = await get("/communities/jx-nh-0001/latest", "admin")
                if r.status_code == 200 and len(r.json()) == 2:
                    break
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.1)
            latest = {x["metric"]: x["value"] for x in r.json()}
            assert latest == {"floor": 4, "door": "closed"}

            span = {"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
            for who in ("admin", "fire-nh", "greentown", "committee-nh"):
                assert (await get("/communities/jx-nh-0001/latest", who)).status_code == 200, who
                ev = await get("/communities/jx-nh-0001/events", who, **span)
                # A fire brigade reads fire kinds only, not the elevator's (issue 13).
                want = [] if who == "fire-nh" else ["fault"]
                assert [e["type"] for e in ev.json()] == want, who
            fire_latest = await get("/communities/jx-nh-0001/latest", "fire-nh")
            assert all(x["device_id"] != ELEV for x in fire_latest.json())
            for who in ("fire-xz", "vanke", "otis"):
                assert (await get("/communities/jx-nh-0001/latest", who)).status_code == 404, who
                ev = await get("/communities/jx-nh-0001/events", who, **span)
                assert ev.status_code == 404, who
            series = f"/devices/{ELEV}/metrics/floor"
            day = {
                "start": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(t0 / 1000 - 86400)),
                "end": time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(t0 / 1000 + 2 * 86400)),
            }
            s = await get(series, "otis", bucket_s="600", **day)
            assert s.status_code == 200
            assert sum(b["n"] for b in s.json()["buckets"]) == 10, s.text
            assert (await get(series, "vanke", bucket_s="3600", **day)).status_code == 404
            assert (await get(series, "nobody", bucket_s="3600", **day)).status_code == 401
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
