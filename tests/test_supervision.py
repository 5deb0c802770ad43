"""Supervision figures on hand-made alert histories, written through the alerting core's
lifecycle and ``AlertStore.save`` into a real PostgreSQL: alerts across midnight and month
ends, late data, escalations, a company changing during a month, percentiles, false alarms,
elevators."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from anju.contract import Audience, Severity
from anju.registry import CityIndex, DeviceInfo, load_registry, sample_registry_path
from backend.alerting.lifecycle import Alert, AlertBook, Deadlines
from backend.alerting.model import Raise
from backend.alerting.storm import pseudo_device
from backend.db.migrate import migrate
from backend.store import AlertStore
from backend.supervision import Level, Period, Scope, figures, refresh, sync_registry

pytestmark = pytest.mark.integration
CHINA = timezone(timedelta(hours=8))
COM = "jx-nh-0001"
GW = "gw-jx-nh-0001-a"


def ms(text: str) -> int:
    """Local (Asia/Shanghai) time 'YYYY-MM-DD HH:MM[:SS]' in ms."""
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return int(datetime.strptime(text, fmt).replace(tzinfo=CHINA).timestamp() * 1000)


class History:
    """Alerts made by hand, stored as the backend stores them."""

    def __init__(self, pool: AsyncConnectionPool, city: CityIndex) -> None:
        self.store = AlertStore(pool)
        self.city = city
        self.book = AlertBook()
        self.pool = pool

    def dev(self, device_id: str, **changes: Any) -> DeviceInfo:
        d = (
            pseudo_device(self.city, "gateway", device_id)
            if device_id.startswith("gw-")
            else self.city.devices[device_id]
        )
        return dataclasses.replace(d, **changes) if changes else d

    async def raise_(
        self,
        dev: DeviceInfo,
        typ: str,
        sev: str,
        occurred: str,
        raised: str | None = None,
        **evidence: Any,
    ) -> Alert:
        ch = self.book.raise_(
            dev, Raise(typ, Severity(sev), typ, ms(occurred), evidence), ms(raised or occurred)
        )
        assert ch is not None
        await self.store.save(ch, ms(raised or occurred))
        return ch.alert

    async def ack(self, alert: Alert, audience: Audience, at: str) -> None:
        ch = self.book.acknowledge(alert, audience, by="someone", note="", now_ms=ms(at))
        assert ch is not None
        await self.store.save(ch, ms(at))

    async def escalate(self, at: str) -> None:
        for ch in self.book.escalations(ms(at), Deadlines()):
            await self.store.save(ch, ms(at))

    async def resolve(self, alert: Alert, at: str, *, by: str = "rules", note: str = "") -> None:
        await self.store.save(self.book.resolve(alert, ms(at), by=by, note=note), ms(at))

    async def figs(
        self, level: Level, period: Period, start: date, end: date, key: str, **kw: Any
    ) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            await refresh(conn, **kw)
            return await figures(
                conn, level=level, period=period, start=start, end=end, scope=Scope(ids=(key,))
            )


@pytest.fixture
async def hist(db_url: str) -> AsyncIterator[History]:
    migrate(db_url)
    city = CityIndex(load_registry(sample_registry_path()))
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        async with pool.connection() as conn:
            await sync_registry(conn, city, today=date(2026, 1, 1))
        yield History(pool, city)


def one(rows: list[dict[str, Any]], period: date) -> dict[str, Any]:
    [row] = [r for r in rows if r["period"] == period]
    return row


async def test_an_outage_across_midnight_is_split_between_the_days(hist: History) -> None:
    a = await hist.raise_(hist.dev(GW), "gateway.offline", "major", "2026-10-30 23:00")
    await hist.resolve(a, "2026-10-31 02:00")
    rows = await hist.figs(Level.COMMUNITY, Period.DAY, date(2026, 10, 30), date(2026, 11, 1), COM)
    com = hist.city.communities[COM]
    devices = len(com.devices)
    d30, d31 = one(rows, date(2026, 10, 30)), one(rows, date(2026, 10, 31))
    assert d30["alerts"] == 1 and d31["alerts"] == 0  # counted on the day it occurred
    assert d30["gateway_uptime"] == pytest.approx(1 - 3600 / 86400)
    assert d31["gateway_uptime"] == pytest.approx(1 - 7200 / 86400)
    # every device of the gateway is offline while it is down
    assert d30["device_online_ratio"] == pytest.approx(1 - 3600 * devices / (devices * 86400))
    assert d31["device_online_ratio"] == pytest.approx(1 - 7200 / 86400)


async def test_pressure_out_of_range_across_a_month_end(hist: History) -> None:
    wp = hist.dev("jx-nh-0001-wp-01")
    a = await hist.raise_(wp, "fire.water_pressure_low", "major", "2026-10-31 22:00")
    await hist.resolve(a, "2026-11-01 03:00")
    ef = hist.dev("jx-nh-0001-ef-01")
    b = await hist.raise_(ef, "fire.electrical", "major", "2026-11-01 10:00")
    await hist.resolve(b, "2026-11-01 10:30")
    rows = await hist.figs(Level.PROPERTY, Period.MONTH, date(2026, 10, 1), date(2026, 12, 1),
                           "org-greentown-jx")  # fmt: skip
    oct_, nov = one(rows, date(2026, 10, 1)), one(rows, date(2026, 11, 1))
    assert (oct_["water_pressure_hours"], nov["water_pressure_hours"]) == (2.0, 3.0)
    assert (oct_["electrical_hours"], nov["electrical_hours"]) == (0.0, 0.5)
    assert (oct_["alerts"], nov["alerts"]) == (1, 1)
    assert oct_["days"] == 31 and nov["days"] == 30


async def test_an_alert_still_open_counts_its_time_up_to_now(hist: History) -> None:
    await hist.raise_(hist.dev("jx-nh-0001-wp-01"), "fire.water_pressure_low", "major",
                      "2026-11-02 08:00")  # fmt: skip
    now = datetime.fromtimestamp(ms("2026-11-02 11:00") / 1000, CHINA)
    rows = await hist.figs(Level.COMMUNITY, Period.DAY, date(2026, 11, 2), date(2026, 11, 3),
                           COM, now=now)  # fmt: skip
    assert rows[0]["water_pressure_hours"] == 3.0
    later = now + timedelta(hours=2)
    rows = await hist.figs(Level.COMMUNITY, Period.DAY, date(2026, 11, 2), date(2026, 11, 3),
                           COM, now=later)  # fmt: skip
    assert rows[0]["water_pressure_hours"] == 5.0


async def test_late_data_lands_on_the_day_it_happened(hist: History) -> None:
    smoke = hist.dev("jx-nh-0001-smoke-3-1201")
    a = await hist.raise_(smoke, "device.battery_low", "minor", "2026-10-31 12:00")
    await hist.resolve(a, "2026-10-31 13:00")
    rows = await hist.figs(Level.COMMUNITY, Period.MONTH, date(2026, 10, 1), date(2026, 11, 1), COM)
    assert rows[0]["alerts"] == 1
    # Held in the gateway's outbox over midnight and a month end: raised on 1 November.
    b = await hist.raise_(smoke, "fire.alarm", "critical", "2026-10-31 23:30", "2026-11-01 04:00")
    await hist.ack(b, Audience.PROPERTY, "2026-11-01 04:01")
    await hist.resolve(b, "2026-11-01 04:20", by="duty officer (org-greentown-jx)", note="ok")
    rows = await hist.figs(Level.COMMUNITY, Period.MONTH, date(2026, 10, 1), date(2026, 12, 1), COM)
    oct_, nov = one(rows, date(2026, 10, 1)), one(rows, date(2026, 11, 1))
    assert (oct_["alerts"], oct_["critical"], oct_["fire_alarms"]) == (2, 1, 1)
    assert nov["alerts"] == 0
    # times are measured from when it was raised (nobody could acknowledge it before)
    assert oct_["ack_median_s"] == 60.0 and oct_["overdue"] == 0


async def test_escalation_and_overdue(hist: History) -> None:
    elev = hist.dev("jx-nh-0001-elev-01")
    smoke = hist.dev("jx-nh-0001-smoke-3-1201")
    # Not acknowledged within 5 minutes: escalated and overdue, acknowledged at 400 s.
    a = await hist.raise_(elev, "elevator.trapped", "critical", "2026-11-03 10:00")
    await hist.escalate("2026-11-03 10:05:01")
    await hist.ack(a, Audience.PROPERTY, "2026-11-03 10:06:40")
    await hist.resolve(a, "2026-11-03 10:20")
    # Acknowledged at 60 s: neither.
    b = await hist.raise_(elev, "elevator.trapped", "critical", "2026-11-04 10:00")
    await hist.ack(b, Audience.PROPERTY, "2026-11-04 10:01")
    await hist.resolve(b, "2026-11-04 10:10")
    # A fire alarm acknowledged at 200 s (deadline 180 s) while the backend did not escalate
    # it: overdue, not escalated.
    c = await hist.raise_(smoke, "fire.alarm", "critical", "2026-11-05 10:00")
    await hist.ack(c, Audience.PROPERTY, "2026-11-05 10:03:20")
    await hist.resolve(c, "2026-11-05 10:30", by="duty (org-greentown-jx)", note="checked")
    # Resolved by its condition at 100 s, never acknowledged: not overdue.
    d = await hist.raise_(elev, "elevator.trapped", "critical", "2026-11-06 10:00")
    await hist.resolve(d, "2026-11-06 10:01:40")
    # A major alert never acknowledged is never overdue (deadlines are for critical ones).
    e = await hist.raise_(elev, "elevator.fault", "major", "2026-11-06 11:00")
    await hist.resolve(e, "2026-11-06 15:00", by="engineer (org-otis-jx)", note="fixed")
    rows = await hist.figs(Level.COMMUNITY, Period.MONTH, date(2026, 11, 1), date(2026, 12, 1), COM)
    r = rows[0]
    assert (r["escalated"], r["overdue"], r["critical"], r["major"]) == (1, 2, 4, 1)
    assert (r["acked"], r["trapped"], r["elevator_faults"]) == (3, 3, 1)
    assert r["elevators"] == 2.0 and r["faults_per_elevator"] == 0.5
    days = await hist.figs(Level.COMMUNITY, Period.DAY, date(2026, 11, 3), date(2026, 11, 7), COM)
    assert [x["escalated"] for x in days] == [1, 0, 0, 0]
    assert [x["overdue"] for x in days] == [1, 0, 1, 0]


async def test_percentiles_are_over_the_acknowledged_alerts(hist: History) -> None:
    door = hist.dev("jx-nh-0001-door-01")
    for i, delay in enumerate([10, 20, 30, 40, 100]):
        t0 = f"2026-11-0{i + 1} 09:00"
        a = await hist.raise_(door, "access.door_forced", "major", t0)
        await hist.ack(a, Audience.PROPERTY, f"2026-11-0{i + 1} 09:00:{delay:02d}"
                       if delay < 60 else f"2026-11-0{i + 1} 09:01:40")  # fmt: skip
        await hist.resolve(a, f"2026-11-0{i + 1} 09:{10 * (i + 1):02d}")
    never = await hist.raise_(door, "access.door_forced", "major", "2026-11-07 09:00")
    await hist.resolve(never, "2026-11-07 09:05")
    rows = await hist.figs(Level.PROPERTY, Period.MONTH, date(2026, 11, 1), date(2026, 12, 1),
                           "org-greentown-jx")  # fmt: skip
    r = rows[0]
    assert (r["alerts"], r["acked"], r["security_alerts"]) == (6, 5, 6)
    assert r["ack_median_s"] == 30.0
    assert r["ack_p90_s"] == pytest.approx(40 + 0.6 * 60)  # percentile_cont, interpolated
    assert r["resolve_median_s"] == 1500.0  # 5, 10, 20, 30, 40, 50 min


async def test_fire_alarms_confirmed_and_false(hist: History) -> None:
    smoke = hist.dev("jx-nh-0001-smoke-3-1201")
    a = await hist.raise_(smoke, "fire.alarm", "critical", "2026-11-10 09:00", confirmed=True)
    await hist.resolve(a, "2026-11-10 09:30", by="duty (org-greentown-jx)", note="real fire")
    b = await hist.raise_(smoke, "fire.alarm", "critical", "2026-11-11 09:00")
    await hist.resolve(b, "2026-11-11 09:10", by="duty (org-greentown-jx)", note="误报：厨房油烟")
    c = await hist.raise_(smoke, "fire.alarm", "critical", "2026-11-12 09:00")
    await hist.resolve(c, "2026-11-12 09:10", by="rules", note="false alarm per panel reset")
    rows = await hist.figs(Level.COMMUNITY, Period.MONTH, date(2026, 11, 1), date(2026, 12, 1), COM)
    r = rows[0]
    # only a person's resolution marks a false alarm
    assert (r["fire_alarms"], r["fire_confirmed"], r["fire_false_alarms"]) == (3, 1, 1)


async def test_maintenance_company_figures(hist: History) -> None:
    elev = hist.dev("jx-nh-0001-elev-01")
    a = await hist.raise_(elev, "elevator.fault", "major", "2026-11-10 09:00")
    await hist.ack(a, Audience.MAINTENANCE, "2026-11-10 09:02")
    await hist.ack(a, Audience.PROPERTY, "2026-11-10 09:05")
    await hist.resolve(a, "2026-11-10 11:00", by="engineer (org-otis-jx)", note="door motor")
    b = await hist.raise_(elev, "elevator.trapped", "critical", "2026-11-11 09:00")
    await hist.ack(b, Audience.MAINTENANCE, "2026-11-11 09:06")
    await hist.resolve(b, "2026-11-11 09:20")
    rows = await hist.figs(Level.MAINTENANCE, Period.MONTH, date(2026, 11, 1), date(2026, 12, 1),
                           "org-otis-jx")  # fmt: skip
    r = rows[0]
    otis = sum(1 for d in hist.city.devices.values() if d.maintenance_org == "org-otis-jx")
    assert (r["alerts"], r["trapped"], r["elevator_faults"]) == (2, 1, 1)
    assert r["elevators"] == otis and r["faults_per_elevator"] == pytest.approx(1 / otis)
    assert r["maint_ack_median_s"] == 240.0  # 120 s and 360 s
    assert r["ack_median_s"] == 300.0  # the property company's, on the one it acknowledged


async def test_a_company_changing_during_a_month(hist: History) -> None:
    # jx-nh-0001 passes from Greentown to Vanke on 16 November.
    async with hist.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO sv_tenure VALUES (%s, %s, %s)", (COM, date(2026, 11, 16), "org-vanke-jx")
        )
    old = hist.dev("jx-nh-0001-door-01")
    new = hist.dev("jx-nh-0001-door-01", property_org="org-vanke-jx")
    a = await hist.raise_(old, "access.door_forced", "major", "2026-11-10 09:00")
    await hist.ack(a, Audience.PROPERTY, "2026-11-10 09:01")
    await hist.resolve(a, "2026-11-10 09:05")
    b = await hist.raise_(new, "access.door_forced", "major", "2026-11-20 09:00")
    await hist.ack(b, Audience.PROPERTY, "2026-11-20 09:03")
    await hist.resolve(b, "2026-11-20 09:05")
    gw_old = await hist.raise_(hist.dev(GW), "gateway.offline", "major", "2026-11-15 23:00")
    await hist.resolve(gw_old, "2026-11-16 01:00")
    start, end = date(2026, 11, 1), date(2026, 12, 1)
    async with hist.pool.connection() as conn:
        await refresh(conn)
        rows = await figures(conn, level=Level.PROPERTY, period=Period.MONTH, start=start, end=end)
    by = {r["key"]: r for r in rows}
    g, v = by["org-greentown-jx"], by["org-vanke-jx"]
    assert (g["alerts"], g["ack_median_s"], v["alerts"], v["ack_median_s"]) == (2, 60.0, 1, 180.0)
    # Greentown held jx-nh-0001 for 15 days, then Vanke. The outage is the gateway's alert,
    # raised while Greentown held it: both of its hours count for Greentown (one on the 15th,
    # one on the 16th, the first day of Vanke's tenure).
    n = len(hist.city.communities[COM].devices)
    assert (g["days"], v["days"]) == (15, 30) and g["device_online_ratio"] == pytest.approx(
        1 - 2 * 3600 * n / (15 * n * 86400)
    )
    assert g["gateway_uptime"] == pytest.approx(1 - 2 * 3600 / (15 * 86400))
    assert v["device_online_ratio"] == 1.0 and v["gateway_uptime"] == 1.0


async def test_a_district_scope_keeps_to_its_district(hist: History) -> None:
    other = next(c for c in hist.city.registry.communities if c.district != "330402")
    d_other = next(d for d in other.devices if d.kind == "smoke_detector")
    a = await hist.raise_(hist.dev(d_other.id), "device.battery_low", "minor", "2026-11-10 09:00")
    await hist.resolve(a, "2026-11-10 10:00")
    b = await hist.raise_(hist.dev("jx-nh-0001-smoke-3-1201"), "device.battery_low", "minor",
                          "2026-11-10 09:00")  # fmt: skip
    await hist.resolve(b, "2026-11-10 10:00")
    async with hist.pool.connection() as conn:
        await refresh(conn)
        rows = await figures(
            conn,
            level=Level.COMMUNITY,
            period=Period.MONTH,
            start=date(2026, 11, 1),
            end=date(2026, 12, 1),
            scope=Scope(districts=("330402",)),
        )
    keys = {r["key"] for r in rows}
    assert COM in keys and other.id not in keys
    assert sum(r["alerts"] for r in rows) == 1


async def test_a_new_company_in_the_registry_starts_a_tenure(hist: History) -> None:
    from anju.registry import parse_registry
    from anju.yamlfile import read_yaml

    data, _node = read_yaml(sample_registry_path())
    for com in data["communities"]:
        if com["id"] == COM:
            com["property"] = "org-vanke-jx"
    changed = CityIndex(parse_registry(data))
    async with hist.pool.connection() as conn:
        await figures(conn, level=Level.PROPERTY, period=Period.MONTH, start=date(2026, 10, 1),
                      end=date(2026, 11, 1))  # fmt: skip
        kept = "SELECT count(*) FROM sv_month_cache"
        await sync_registry(conn, hist.city, today=date(2026, 11, 15))  # the same registry
        assert await (await conn.execute(kept)).fetchone() == (1,)  # still materialised
        await sync_registry(conn, changed, today=date(2026, 11, 16))
        assert await (await conn.execute(kept)).fetchone() == (0,)  # denominators changed
        await sync_registry(conn, changed, today=date(2026, 11, 20))  # no change: no new row
        cur = await conn.execute(
            "SELECT since, property_org FROM sv_tenure WHERE community_id = %s ORDER BY since",
            (COM,),
        )
        rows = await cur.fetchall()
    assert rows == [(date(2000, 1, 1), "org-greentown-jx"), (date(2026, 11, 16), "org-vanke-jx")]
