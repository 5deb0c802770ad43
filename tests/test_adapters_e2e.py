"""The adapters on real servers: a UITD simulator over real TCP and a Modbus elevator simulator
(pymodbus) to a real gateway, real Mosquitto (LAN and uplink), PostgreSQL and the real
backend; alerts on the departments' topics."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from anju.errors import ConfigError
from anju.registry import CityIndex, load_registry
from anju.servers import PrivateMosquitto, free_port
from device_simulators.modbus_elevator import ModbusElevator
from device_simulators.uitd import Step, Uitd, UitdClient
from gateway import Gateway, GatewayConfig
from gateway.adapters.fromregistry import gbt_section, modbus_section
from gateway.adapters.gbt26875 import (
    ComponentStatus,
    DataUnit,
    Frame,
    Time,
    deframe,
    encode_description,
    encode_frame,
    encode_unit,
)
from gateway.adapters.modbus_map import load_map
from tests.support import GatewayProcess, Subscriber, eventually, running_backend, running_gateway

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
PANEL = "jx-nh-0001-panel-gbt"
WP = "jx-nh-0001-wp-gbt"
ELEV = "jx-nh-0001-elev-mb"
SOURCE = "0102030405a6"


def city_with_adapters(base: Path, tmp_path: Path) -> Path:
    doc = yaml.safe_load(base.read_text(encoding="utf-8"))
    com = doc["communities"][0]
    com["devices"] += [
        {
            "id": PANEL,
            "kind": "fire_panel",
            "gateway": GW,
            "building": "3",
            "location": "Fire control room",
            "params": {"source_address": SOURCE, "heartbeat_s": 1, "linkage_feedback_s": 2},
        },
        {
            "id": WP,
            "kind": "water_pressure",
            "gateway": GW,
            "location": "Pump room",
            "params": {
                "panel": PANEL,
                "system_addr": 1,
                "component_addr": 9001,
                "min_mpa": 0.10,
                "low_s": 1,
            },
        },
        {
            "id": "jx-nh-0001-smoke-gbt-3012",
            "kind": "smoke_detector",
            "gateway": GW,
            "building": "3",
            "location": "Building 3, unit 1, floor 12",
            "params": {"panel": PANEL, "system_addr": 1, "component_addr": 3012},
        },
        {
            "id": ELEV,
            "kind": "elevator",
            "gateway": GW,
            "building": "3",
            "location": "Building 3, unit 2",
            "maintenance": "org-otis-jx",
            "params": {
                "floors": 10,
                "modbus_map": "builtin:example_discrete",
                "trap_s": 3,
                "report_interval_s": 1,
            },
        },
    ]
    out = tmp_path / "city.yaml"
    out.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return out


def gateway_config(
    city: CityIndex, lan: PrivateMosquitto, broker: PrivateMosquitto, tmp: Path, **sections: Any
) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway_id": GW,
            "lan": {"url": lan.url},
            "uplink": {"url": broker.url},
            "outbox": {"path": str(tmp / "outbox.sqlite3"), "resend_after_s": 2},
            "devices": [d.id for d in city.gateway_devices(GW)],
            "clock": {"sync": "assume"},
            **sections,
        }
    )


async def test_a_panel_fire_over_gbt26875_reaches_the_fire_brigade(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    path = city_with_adapters(city_file, tmp_path)
    city = CityIndex(load_registry(path))
    fire_nh = Subscriber(broker.port, "anju/alerts/fire/330402/#")
    task = asyncio.create_task(fire_nh.run(), name="sub-fire")
    await asyncio.wait_for(fire_nh.ready.wait(), 10)
    cfg = gateway_config(city, lan_broker, broker, tmp_path, gbt26875=gbt_section(city, GW, port=0))
    async with running_backend(db_url, broker, path), running_gateway(cfg) as gw:
        port = gw.adapters.gbt_port
        assert port
        client = UitdClient("127.0.0.1", port, bytes.fromhex(SOURCE))
        uitd = Uitd(client, heartbeat_s=0.5)

        def play(*steps: dict[str, Any]) -> None:
            for s in steps:
                uitd.apply(Step.model_validate({"at": 0, **s}))

        await asyncio.to_thread(
            play,
            {"action": "analog", "component_type": 91, "component_addr": 9001, "value": 3500},
            {"action": "fire", "component_addr": 3012, "text": "3号楼12层烟感"},
        )
        await eventually(lambda: bool(fire_nh.of_type("fire.alarm")), 30, "the fire alarm")
        topic, alert = fire_nh.of_type("fire.alarm")[0]
        assert topic == "anju/alerts/fire/330402/jx-nh-0001/fire.alarm"
        assert alert["device_id"] == PANEL and alert["severity"] == "critical"
        comp = alert["evidence"]["component"]
        assert (
            comp["location"] == "Building 3, unit 1, floor 12" and comp["text"] == "3号楼12层烟感"
        )
        assert (
            comp["component_type"] == "smoke_detector" and alert["evidence"]["confirmed"] is False
        )
        # A second component of the same panel in the same building confirms it.
        await asyncio.to_thread(play, {"action": "fire", "component_addr": 3008})
        await eventually(
            lambda: any(a["evidence"].get("confirmed") for _, a in fire_nh.of_type("fire.alarm")),
            30,
            "the confirmation",
        )
        # Linkage without feedback, and the hydrant main's pressure through the panel.
        await asyncio.to_thread(
            play,
            {"action": "start", "component_type": 111, "component_addr": 5001},
            {"action": "analog", "component_type": 91, "component_addr": 9001, "value": 500},
        )

        async def heartbeats() -> None:
            for _ in range(10):
                await asyncio.to_thread(client.report, None)
                await asyncio.sleep(0.5)

        await heartbeats()
        await asyncio.to_thread(
            play, {"action": "analog", "component_type": 91, "component_addr": 9001, "value": 500}
        )
        await eventually(
            lambda: bool(fire_nh.of_type("fire.linkage_no_feedback")), 30, "the linkage alert"
        )
        await eventually(
            lambda: bool(fire_nh.of_type("fire.water_pressure_low")), 30, "the pressure alert"
        )
        (_, low), *_ = fire_nh.of_type("fire.water_pressure_low")
        assert low["device_id"] == WP and low["evidence"]["pressure_mpa"] == 0.05
        # The UITD falls silent: transmission offline after three heartbeat intervals.
        client.close()
        await eventually(
            lambda: bool(fire_nh.of_type("fire.transmission_offline")), 30, "transmission offline"
        )
    task.cancel()


async def test_a_modbus_elevator_traps_faults_and_goes_silent(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    path = city_with_adapters(city_file, tmp_path)
    city = CityIndex(load_registry(path))
    market = Subscriber(broker.port, "anju/alerts/market_supervision/330402/#")
    prop = Subscriber(broker.port, "anju/alerts/property/org-greentown-jx/#")
    tasks = [asyncio.create_task(s.run(), name=f"sub-{i}") for i, s in enumerate((market, prop))]
    for s in (market, prop):
        await asyncio.wait_for(s.ready.wait(), 10)
    sim = ModbusElevator(ELEV, {"floors": 10}, load_map("builtin:example_discrete"))
    sim.start()
    modbus = modbus_section(
        city, GW, {ELEV: ("127.0.0.1", sim.port)}, poll_s=0.2, report_s=1, backoff_max_s=1
    )
    cfg = gateway_config(city, lan_broker, broker, tmp_path, modbus=modbus)
    try:
        async with running_backend(db_url, broker, path), running_gateway(cfg):
            await asyncio.sleep(1)
            sim.inject("trap", {"between_floors": True})
            await eventually(lambda: bool(market.of_type("elevator.trapped")), 30, "trapped")
            _, trapped = market.of_type("elevator.trapped")[0]
            assert trapped["device_id"] == ELEV and trapped["severity"] == "critical"
            sim.inject("event", {"type": "fault", "code": "02"})
            await eventually(lambda: bool(market.of_type("elevator.fault")), 30, "the fault")
            _, fault = market.of_type("elevator.fault")[0]
            assert fault["evidence"].get("code") == "02" or "02" in str(fault["evidence"])
            sim.silence()
            await eventually(lambda: bool(prop.of_type("device.offline")), 30, "device.offline")
            _, off = prop.of_type("device.offline")[0]
            assert off["device_id"] == ELEV and off["severity"] == "major"
    finally:
        sim.stop()
        for t in tasks:
            t.cancel()


def test_a_register_map_with_an_error_is_refused_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\npoints:\n  - {metric: floor, table: holding, address: 0}\n"
        "  - {metric: flor, table: holding, address: 1}\n"
        "  - {metric: door, table: coil, address: 2}\n",
        encoding="utf-8",
    )
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": GW,
            "lan": {"url": "mqtt://127.0.0.1:1"},
            "uplink": {"url": "mqtt://127.0.0.1:1"},
            "outbox": {"path": str(tmp_path / "o.sqlite3")},
            "devices": [ELEV],
            "modbus": {"controllers": [{"device": ELEV, "host": "127.0.0.1", "map": str(bad)}]},
        }
    )
    with pytest.raises(ConfigError) as err:
        Gateway(cfg)
    msg = str(err.value)
    assert f"{bad}:4: points.1: Value error, unknown elevator metric 'flor'" in msg
    assert f"{bad}:5: points.2: Value error, door needs an 'enum'" in msg


class _PipeliningUitd:
    """Sends numbered fire reports (one component each), up to 32 unconfirmed; on a lost link
    reconnects and sends every unconfirmed frame again, byte for byte (as a UITD resends)."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.frames = {
            s: encode_frame(
                Frame(s, 2, bytes.fromhex(SOURCE), bytes(6), encode_unit(_fire_unit(s)), T0)
            )
            for s in range(1, n + 1)
        }
        self.confirmed: set[int] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.confirmed) < len(self.frames):
            try:
                self._session()
            except OSError:
                time.sleep(0.2)

    def _session(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        s.settimeout(0.2)
        sent: set[int] = set()
        buf = bytearray()
        try:
            while not self.stop.is_set() and len(self.confirmed) < len(self.frames):
                todo = [k for k in sorted(self.frames) if k not in self.confirmed and k not in sent]
                room = 32 - len(sent - self.confirmed)
                if todo and room > 0:
                    batch = todo[:room]
                    s.sendall(b"".join(self.frames[k] for k in batch))
                    sent.update(batch)
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    raise ConnectionResetError("closed")
                buf += chunk
                items, used = deframe(buf)
                del buf[:used]
                self.confirmed.update(
                    f.serial for f in items if isinstance(f, Frame) and f.command == 3
                )
        finally:
            s.close()


T0 = Time(5, 4, 10, 28, 11, 26)


def _fire_unit(addr: int) -> DataUnit:
    return DataUnit(2, (ComponentStatus(1, 1, 40, addr, 0b11, encode_description("烟感"), T0),))


def _panel_fires(db_url: str) -> list[int]:
    with psycopg.connect(db_url) as conn:
        try:
            rows = conn.execute(
                "SELECT (data->>'component_addr')::int FROM events"
                " WHERE device_id = %s AND type = 'fire'",
                (PANEL,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return [int(r[0]) for r in rows]


async def test_a_gateway_killed_between_receipt_and_confirm_loses_and_doubles_nothing(
    db_url: str,
    broker: PrivateMosquitto,
    lan_broker: PrivateMosquitto,
    city_file: Path,
    tmp_path: Path,
) -> None:
    path = city_with_adapters(city_file, tmp_path)
    city = CityIndex(load_registry(path))
    port = free_port()
    doc = gateway_config(
        city, lan_broker, broker, tmp_path, gbt26875=gbt_section(city, GW, port=port)
    ).model_dump(mode="json", exclude_none=True)
    gw = GatewayProcess(doc, tmp_path)
    n = 600
    uitd = _PipeliningUitd(port, n)
    sender = threading.Thread(target=uitd.run, name="uitd")
    gw.start()
    try:
        async with running_backend(db_url, broker, path):
            sender.start()
            await eventually(lambda: len(uitd.confirmed) >= 100, 60, "the first confirms")
            gw.kill()  # frames in flight: received, some committed, none confirmed yet
            assert len(uitd.confirmed) < n, "the kill came too late to test anything"
            gw.start()
            await eventually(lambda: len(uitd.confirmed) == n, 120, "every frame confirmed")
            await eventually(lambda: len(_panel_fires(db_url)) >= n, 90, "every fire stored")
            await asyncio.sleep(1.0)  # anything stored twice would have landed by now
            got = _panel_fires(db_url)
            assert sorted(got) == list(range(1, n + 1))
    finally:
        uitd.stop.set()
        if sender.is_alive():
            sender.join(10)
        gw.stop()
