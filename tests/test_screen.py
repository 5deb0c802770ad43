"""The control room and the departments' consoles in a real browser (Debian's Chromium through
Playwright) against the real backend, Mosquitto and PostgreSQL: a fire alarm appears and
sounds, is acknowledged from the page as the token's principal, the page rides out a backend
restart and catches up; a department sees its district only; the elevator panel follows a car
floor by floor; a chart shows a known series; a wrong token says so. Screenshots of every page
go to ``test-artifacts/screens/``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.async_api import Page, expect

from anju.servers import PrivateMosquitto, free_port
from backend.service import Backend
from tests.browser_support import chromium, new_page, snap
from tests.support import running_backend
from tests.test_alert_e2e import ELEV, SMOKE, Uplink, alerting_file, now_ms

pytestmark = pytest.mark.integration

SMOKE_2 = "jx-nh-0001-smoke-3-0801"
SMOKE_XZ = "jx-xz-0001-smoke-2-0101"
PRESSURE = "jx-nh-0001-wp-1"
GW_XZ = "gw-jx-xz-0001-a"
LIVE = re.compile(r"(^|\s)live(\s|$)")  # the body's classes
NOT_LIVE = re.compile(r"(^|\s)not-live(\s|$)")


def city_with_pressure(city_file: Path, tmp_path: Path) -> Path:
    """The test city plus a sprinkler water-pressure sensor (minimum 0.15 MPa) in Nanhu."""
    doc = yaml.safe_load(city_file.read_text(encoding="utf-8"))
    doc["communities"][0]["devices"].append(
        {
            "id": PRESSURE,
            "kind": "water_pressure",
            "gateway": "gw-jx-nh-0001-a",
            "building": "3",
            "location": "B1 pump room",
            "params": {"min_mpa": 0.15, "system": "sprinkler"},
        }
    )
    out = tmp_path / "city.json"
    out.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return out


@asynccontextmanager
async def backend(
    db_url: str, broker: PrivateMosquitto, city: Path, tmp_path: Path, port: int
) -> AsyncIterator[Backend]:
    async with running_backend(
        db_url, broker, city, alerting=alerting_file(tmp_path), port=port
    ) as b:
        yield b


async def log_in(page: Page, port: int, token: str, tab: str = "alerts") -> None:
    await page.goto(f"http://127.0.0.1:{port}/screen/#{tab}")
    await expect(page.locator("#login")).to_be_visible(timeout=10_000)
    await page.fill("#token", token)
    await page.click("#login-btn")


async def live(page: Page) -> None:
    await expect(page.locator("body")).to_have_class(LIVE, timeout=15_000)
    await expect(page.locator("#banner")).to_be_hidden()


async def test_fire_alarm_sounds_is_acknowledged_and_the_page_rides_out_a_restart(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    up = Uplink(broker.port)
    async with chromium() as browser, new_page(browser) as page:
        async with backend(db_url, broker, city_file, tmp_path, port):
            await log_in(page, port, "tok-greentown")
            await live(page)
            await expect(page.locator("#empty")).to_have_text("当前无未处理警报（实时）")
            await expect(page.locator("#app-title")).to_have_text("安居 · 监控中心")

            t = now_ms()
            await up.send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
            alarm = page.locator("#rows tr.critical.flash")
            await expect(alarm).to_have_count(1, timeout=2_000)
            await expect(alarm).to_contain_text("火警")
            await expect(alarm.locator("td.level")).to_have_text("紧急")
            await page.wait_for_function(
                "window.anjuAlarm.playing && window.anjuAlarm.beeps > 0", timeout=2_000
            )
            await snap(page, "control-room-fire-alarm")
            # It repeats until acknowledged.
            beeps = await page.evaluate("window.anjuAlarm.beeps")
            await page.wait_for_function(f"window.anjuAlarm.beeps > {beeps}", timeout=5_000)

            # The detail: evidence in words, what to do; acknowledged from the page.
            await alarm.click()
            await expect(page.locator("#sentence")).to_contain_text("报警")
            await expect(page.locator("#detail .todo")).to_contain_text("119")
            await expect(page.locator("#timeline li")).to_have_count(1, timeout=5_000)
            await snap(page, "control-room-alert-detail")
            await page.fill("#ack-by", "王")
            await page.fill("#ack-note", "保安已出发")
            await page.click("#ack-btn")
            await expect(page.locator("#rows tr.acknowledged")).to_have_count(1, timeout=5_000)
            await page.wait_for_function("!window.anjuAlarm.playing", timeout=5_000)
            await expect(page.locator("#rows tr.flash")).to_have_count(0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                got = await http.get(
                    "/api/alerts?open_only=true", headers={"Authorization": "Bearer tok-greentown"}
                )
            [a] = got.json()
            [ack] = a["acks"]
            assert ack["audience"] == "property" and ack["by"] == "王 (greentown)"
            assert ack["note"] == "保安已出发"
            # Muting shows (per screen); the next new critical alert ends it (below).
            await page.keyboard.press("Escape")
            await page.keyboard.press("m")
            await expect(page.locator("#mute")).to_have_class("muted")
            await expect(page.locator("#mute")).to_contain_text("已静音")

        # The backend is gone: the page says so, loudly, and does not look like "all clear".
        await expect(page.locator("#banner")).to_be_visible(timeout=15_000)
        await expect(page.locator("body")).to_have_class(NOT_LIVE)
        await expect(page.locator("#empty")).to_contain_text("没有数据")
        await page.wait_for_function("window.anjuAlarm.lost", timeout=10_000)
        await snap(page, "control-room-not-live")
        # A second fire while the backend is down (the broker keeps it for the backend).
        t = now_ms()
        await up.send(SMOKE_2, "e", t, t, {"e": "alarm", "x": {}})

        async with backend(db_url, broker, city_file, tmp_path, port):
            await live(page)
            await expect(page.locator("#rows tr.critical.flash")).to_have_count(1, timeout=15_000)
            await expect(page.locator("#rows tr.acknowledged")).to_have_count(1)
            await page.wait_for_function("!window.anjuAlarm.lost", timeout=5_000)
            await page.wait_for_function(
                "!window.anjuAlarm.muted && window.anjuAlarm.playing", timeout=5_000
            )
            await snap(page, "control-room-caught-up")


async def test_department_console_shows_its_district_only_and_a_wrong_token_says_so(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    async with (
        backend(db_url, broker, city_file, tmp_path, port),
        chromium() as browser,
    ):
        t = now_ms()
        await Uplink(broker.port).send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
        await Uplink(broker.port, GW_XZ).send(SMOKE_XZ, "e", t, t, {"e": "alarm", "x": {}})
        async with new_page(browser) as page:
            await log_in(page, port, "tok-fire-xz")
            await live(page)
            await expect(page.locator("#app-title")).to_have_text("安居 · 部门值守台")
            await expect(page.locator("#who")).to_contain_text("秀洲区 消防")
            await expect(page.locator("#rows tr")).to_have_count(1, timeout=10_000)
            await expect(page.locator("#rows tr")).to_contain_text("运河湾小区")
            await snap(page, "department-fire-alerts")
            await page.keyboard.press("2")
            await expect(page.locator("#schematic .com")).to_have_count(1, timeout=10_000)
            await expect(page.locator("#schematic .com")).to_contain_text("运河湾小区")
            await snap(page, "department-fire-communities")
            # English on the toggle.
            await page.keyboard.press("l")
            await expect(page.locator("#app-title")).to_have_text("anju · Department console")

        async with new_page(browser) as page:
            await log_in(page, port, "tok-wrong")
            await expect(page.locator("#login-error")).to_contain_text("401")
            await expect(page.locator("#banner")).to_be_visible()
            await expect(page.locator("#banner")).to_contain_text("令牌被拒绝")
            await snap(page, "wrong-token")

        # Admin (as every caller is in `anju demo`) acknowledges on behalf of an audience it
        # chooses (property by default), instead of the 422 the old page met.
        async with new_page(browser) as page:
            await log_in(page, port, "tok-root")
            await live(page)
            await expect(page.locator("#rows tr")).to_have_count(2, timeout=10_000)
            await page.locator("#rows tr").first.click()
            await expect(page.locator("#ack-audience")).to_have_value("property")
            await page.click("#ack-btn")
            await expect(page.locator("#rows tr.acknowledged")).to_have_count(1, timeout=5_000)
            await expect(page.locator("#detail-error")).to_have_text("")
            await expect(page.locator("#timeline li")).to_have_count(2, timeout=5_000)
            await expect(page.locator("#timeline")).to_contain_text("root")


async def test_elevator_panel_follows_the_car_floor_by_floor(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    up = Uplink(broker.port)
    async with (
        backend(db_url, broker, city_file, tmp_path, port),
        chromium() as browser,
        new_page(browser) as page,
    ):
        await log_in(page, port, "tok-market-nh", tab="elevators")
        await live(page)
        car = page.locator(f'.elev[data-id="{ELEV}"]')
        await expect(car).to_be_visible(timeout=10_000)
        t0 = now_ms()
        for i, floor in enumerate([1, 2, 3, 4, 5, 6]):
            state = {
                "floor": floor,
                "moving": floor < 6,
                "direction": "up" if floor < 6 else "none",
                "door": "closed" if floor < 6 else "open",
                "passenger": True,
                "in_door_zone": True,
                "service_mode": "normal",
            }
            await up.send(ELEV, "t", t0 + i * 2000, t0 + i * 2000, {"m": state})
            await expect(car.locator(".floor")).to_have_attribute(
                "data-floor", str(floor), timeout=10_000
            )
        await expect(car).to_contain_text("门 开")
        await expect(car).to_contain_text("停止")
        await snap(page, "elevator-panel")


async def test_chart_shows_a_known_series_against_its_minimum(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    city = city_with_pressure(city_file, tmp_path)
    up = Uplink(broker.port)
    minute = (now_ms() // 60_000) * 60_000
    series = [0.32, 0.31, 0.12, 0.30, 0.33]  # one reading a minute, the newest last
    async with (
        backend(db_url, broker, city, tmp_path, port),
        chromium() as browser,
        new_page(browser) as page,
    ):
        for i, v in enumerate(series):
            ts = minute - (len(series) - 1 - i) * 60_000 + 5_000
            await up.send(PRESSURE, "t", ts, ts, {"m": {"pressure_mpa": v}})
        await log_in(page, port, "tok-greentown", tab=f"charts/{PRESSURE}/pressure_mpa/1h")
        await live(page)
        points = page.locator("#chart circle.pt")
        await expect(points).to_have_count(len(series), timeout=15_000)
        values = [float(v) for v in await points.evaluate_all("ps => ps.map(p => p.dataset.v)")]
        assert values == series
        await expect(page.locator("#chart .limit-label")).to_contain_text("0.15")
        await expect(page.locator("#chart")).to_have_attribute("data-source", "raw")
        await expect(page.locator("#chart-stats")).to_contain_text("最小 0.12")
        await snap(page, "chart-water-pressure")
        await page.keyboard.press("3")  # the elevator panel of the property company, too
        await expect(page.locator(".elev")).to_have_count(1, timeout=10_000)
        await page.keyboard.press("2")
        await expect(page.locator("#schematic .com")).to_have_count(1, timeout=10_000)
        await snap(page, "control-room-communities")
