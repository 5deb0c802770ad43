"""``anju gateway status`` shows each adapter's state: the GB/T 26875.3 server with the UITDs
connected to it, and each Modbus controller (answering, backing off, not answering, last poll).
Real TCP: the UITD and Modbus simulators."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from device_simulators.adapter_rig import running_adapters
from device_simulators.modbus_elevator import ModbusElevator
from device_simulators.uitd import UitdClient
from gateway.adapters.config import Gbt26875Config, ModbusConfig
from gateway.adapters.gbt26875 import ComponentStatus, DataUnit, Time, encode_description
from gateway.adapters.modbus_map import load_map
from gateway.config import GatewayConfig
from gateway.status import format_status, gather_status, write_status

A = bytes.fromhex("0102030405a6")
ELEV = "jx-nh-0001-elev-mb"
GONE = "jx-nh-0001-elev-gone"


def wait_for(check: Any, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def controller(device: str, port: int) -> dict[str, Any]:
    return {
        "device": device,
        "host": "127.0.0.1",
        "port": port,
        "map": "builtin:example_discrete",
        "poll_s": 0.1,
        "report_s": 1,
        "backoff_max_s": 0.2,
        "timeout_s": 0.2,
    }


def test_status_shows_uitd_connections_and_each_controllers_state(tmp_path: Path) -> None:
    sim = ModbusElevator(ELEV, {"floors": 10}, load_map("builtin:example_discrete"))
    sim.start()
    gbt = Gbt26875Config.model_validate(
        {"host": "127.0.0.1", "port": 0, "uitds": [{"source_address": A.hex(), "device": "p"}]}
    )
    # One controller answers; nothing listens at the other's address.
    mb = ModbusConfig.model_validate(
        {"controllers": [controller(ELEV, sim.port), controller(GONE, free_port())]}
    )
    try:
        with running_adapters(tmp_path / "outbox.sqlite3", gbt=gbt, modbus=mb) as ad:
            assert ad.state()["gbt26875"]["connections"] == []
            client = UitdClient("127.0.0.1", ad.gbt_port, A, confirm_timeout_s=5)
            t0 = Time(5, 4, 10, 28, 11, 26)
            status = ComponentStatus(1, 1, 40, 7, 0b11, encode_description("烟感"), t0)
            assert client.report(DataUnit(2, (status,))) is True
            gone = next(p for p in ad.pollers if p.cfg.device == GONE)
            wait_for(lambda: ad.pollers[0].polls > 0, "a first poll")
            wait_for(lambda: gone.failures >= gone.cfg.offline_after, "the silent controller")
            state = ad.state()
            client.close()
    finally:
        sim.stop()

    (conn,) = state["gbt26875"]["connections"]
    assert conn["uitds"] == [A.hex()] and conn["last_frame_ms"] >= conn["since_ms"]
    by_device = {m["device"]: m for m in state["modbus"]}
    assert by_device[ELEV]["state"] == "answering" and by_device[ELEV]["last_poll_ms"]
    assert by_device[GONE]["state"] == "not answering" and by_device[GONE]["last_error"]
    assert by_device[GONE]["last_poll_ms"] is None

    # As the running gateway writes it next to the outbox, and as the command shows it.
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": "gw-1",
            "lan": {"url": "mqtt://127.0.0.1:1883"},
            "uplink": {"url": "mqtt://127.0.0.1:1884"},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
            "devices": [],
        }
    )
    now = int(time.time() * 1000)
    write_status(
        cfg.status_path(),
        {
            "running": True,
            "pid": os.getpid(),
            "updated_ms": now,
            "uplink": {"connected": True, "url": "mqtt://127.0.0.1:1884"},
            "adapters": state,
        },
    )
    s = gather_status(cfg, now_ms=now)
    assert s["adapters"] == state
    text = format_status(s)
    assert "gb/t 26875  listening on 127.0.0.1:" in text and "1 connected" in text
    assert A.hex() in text
    assert f"modbus      {ELEV} at 127.0.0.1:{sim.port}  answering" in text
    assert f"modbus      {GONE}" in text and "not answering" in text
