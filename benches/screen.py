"""``anju bench screen``: the control-room page with 1,000 open alerts and 300 communities.

The page's real files (``backend/api/static``) are served with the routes the page calls
(``/api/status/me``, ``/api/alerts``, ``/api/alerts/stream``, ``/api/status/communities``)
answering a generated city, so what is measured is the page itself, in Debian's Chromium
(headless, 1920x1080, through Playwright):

- ``render_ms``: from navigation start to the page live with its alerts on screen (the most
  urgent 200 rows, the rest counted on a "more" line), median of three fresh pages;
- ``communities_render_ms``: from the key press to 300 community cards;
- ``input_latency_ms``: a key press (selection moves) to the next painted frame, median and
  worst over ``presses``, while the page ticks its ages and countdowns;
- ``burst_ms``: 100 live alert changes arriving at once, applied and rendered;
- ``tick_ms``: one pass of the once-a-second age and countdown update over 1,000 rows;
- ``long_tasks``: main-thread tasks over 50 ms seen during the input measurements.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.staticfiles import StaticFiles

import backend
from anju.errors import ServerError
from anju.servers import free_port

STATIC = Path(backend.__file__).parent / "api" / "static"
KINDS = ("smoke_detector", "elevator", "water_pressure", "camera", "emergency_button")
TYPES = (
    ("fire.alarm", "critical", "火警 Fire alarm", "smoke_detector"),
    ("elevator.trapped", "critical", "电梯困人 Passengers trapped", "elevator"),
    ("fire.water_pressure_low", "major", "消防水压低 Water pressure low", "water_pressure"),
    ("device.offline", "minor", "设备离线 Device offline", "camera"),
    ("security.emergency_button", "critical", "紧急按钮 Emergency button", "emergency_button"),
)


def _alert(i: int, n_communities: int, now: datetime) -> dict[str, Any]:
    typ, sev, title, kind = TYPES[i % len(TYPES)]
    com = i % n_communities
    at = (now - timedelta(seconds=7 * i)).isoformat()
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "type": typ,
        "severity": sev,
        "state": "acknowledged" if i % 3 == 0 else "raised",
        "title": title,
        "device_id": f"b-{com:04d}-{kind}-{i}",
        "device_kind": kind,
        "community_id": f"b-{com:04d}",
        "community_name": f"测试小区{com:04d}",
        "district": "330402",
        "building": str(1 + i % 6),
        "location": f"{1 + i % 6}号楼 {1 + i % 2}单元",
        "occurred_at": at,
        "raised_at": at,
        "updated_at": at,
        "evidence": {"floor": 7, "in_door_zone": False, "door": "closed", "stopped_s": 42.0},
        "audiences": [
            {"audience": "fire", "scope": "330402"},
            {"audience": "property", "scope": "org-bench"},
        ],
        "acks": (
            [{"audience": "property", "by": "bench", "at": at, "note": ""}] if i % 3 == 0 else []
        ),
    }


def _community(c: int) -> dict[str, Any]:
    buildings = [
        {
            "id": str(b),
            "total": 12,
            "online": 11,
            "offline": 1,
            "unknown": 0,
            "low_battery": b % 2,
            "kinds": {"smoke_detector": 10, "elevator": 2},
        }
        for b in range(1, 7)
    ]
    return {
        "id": f"b-{c:04d}",
        "name": f"测试小区{c:04d}",
        "district": "330402",
        "district_name": "南湖区",
        "street": "南湖街道",
        "property": "org-bench",
        "property_name": "基准物业",
        "devices": {"total": 72, "online": 66, "offline": 6, "unknown": 0, "low_battery": 3},
        "buildings": buildings,
        "gateways": [
            {
                "id": f"gw-b-{c:04d}",
                "online": c % 50 != 0,
                "boot_id": None,
                "last_contact": datetime.now(UTC).isoformat(),
                "outbox_depth": None,
            }
        ],
        "open_alerts": 3,
    }


def _app(alerts: int, communities: int) -> FastAPI:
    now = datetime.now(UTC)
    listed = [_alert(i, communities, now) for i in range(alerts)]
    coms = [_community(c) for c in range(communities)]
    app = FastAPI()
    me = {
        "name": "bench",
        "audience": "property",
        "scope": "org-bench",
        "scope_name": "基准物业",
        "admin": False,
        "can_resolve": True,
        "kinds": None,
        "ack_deadline_s": {"default": 300.0, "fire": 180.0},
    }

    @app.get("/api/status/me")
    async def _me() -> dict[str, Any]:
        return me

    @app.get("/api/alerts")
    async def _alerts() -> list[dict[str, Any]]:
        return listed

    @app.get("/api/status/communities")
    async def _coms() -> list[dict[str, Any]]:
        return coms

    @app.get("/api/alerts/stream")
    async def _stream() -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            yield b": anju live alerts\n\n"
            while True:
                await asyncio.sleep(15)
                yield b": keep-alive\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    app.mount("/screen", StaticFiles(directory=STATIC, html=True), name="screen")
    return app


@contextmanager
def _serving(app: FastAPI) -> Iterator[int]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    server.config.timeout_graceful_shutdown = 1
    thread = threading.Thread(target=server.run, name="bench-screen-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise ServerError("the bench's HTTP server did not start within 10 s")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


_PRESS = """async (n) => {
  const out = [];
  let long = 0;
  const obs = new PerformanceObserver((l) => { long += l.getEntries().length; });
  obs.observe({ entryTypes: ["longtask"] });
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    document.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
    out.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 30));
  }
  obs.disconnect();
  return { times: out, long };
}"""
_BURST = """async (n) => {
  const S = window.anjuScreen.state;
  const base = [...S.alerts.values()].slice(0, n);
  const t0 = performance.now();
  for (const a of base) {
    window.anjuScreen.upsert({ ...a, state: "acknowledged", updated_at: new Date().toISOString(),
      acks: [{ audience: "property", by: "bench", at: new Date().toISOString(), note: "" }] });
  }
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
}"""
_TICK = """() => {
  const t0 = performance.now();
  for (let i = 0; i < 10; i++) window.anjuScreen.tick();
  return (performance.now() - t0) / 10;
}"""


def run(quick: bool = False) -> dict[str, Any]:
    """Measure the page; ``quick`` uses 100 alerts and 30 communities."""
    from playwright.sync_api import Page, sync_playwright

    alerts, communities = (100, 30) if quick else (1000, 300)
    presses = 5 if quick else 40
    chromium = os.environ.get("ANJU_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise ServerError("anju bench screen needs Debian's Chromium: apt-get install chromium")
    with _serving(_app(alerts, communities)) as port, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        try:
            loads = []
            pages: list[Page] = []
            for _ in range(1 if quick else 3):  # each in a fresh page; the median is reported
                if pages:
                    pages[-1].close()
                page = browser.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
                pages.append(page)
                page.goto(f"http://127.0.0.1:{port}/screen/#alerts")
                page.wait_for_function("window.anjuScreen.liveAt > 0", timeout=30_000)
                loads.append(float(page.evaluate("window.anjuScreen.liveAt")))
                rows = int(page.evaluate("window.anjuScreen.state.alerts.size"))
                if rows != alerts:
                    raise RuntimeError(f"the page holds {rows} alerts, not {alerts}")
            render_ms = statistics.median(loads)
            t0 = float(page.evaluate("performance.now()"))
            page.keyboard.press("2")
            page.wait_for_function(
                f"document.querySelectorAll('#schematic .com').length === {communities}",
                timeout=30_000,
            )
            communities_ms = float(page.evaluate("performance.now()")) - t0
            page.keyboard.press("1")
            pressed = page.evaluate(_PRESS, presses)
            times = sorted(float(x) for x in pressed["times"])
            burst = float(page.evaluate(_BURST, min(100, alerts)))
            tick = float(page.evaluate(_TICK))
        finally:
            browser.close()
    return {
        "alerts": alerts,
        "communities": communities,
        "render_ms": round(render_ms, 1),
        "communities_render_ms": round(communities_ms, 1),
        "input_latency_ms": {
            "p50": round(statistics.median(times), 1),
            "max": round(times[-1], 1),
            "presses": presses,
        },
        "burst_ms": round(burst, 1),
        "tick_ms": round(tick, 2),
        "long_tasks": int(pressed["long"]),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick=False)))
