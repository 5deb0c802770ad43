"""What ``anju demo`` needs for the adapters: a UITD server port per gateway with UITDs in the
registry, a Modbus simulator per elevator with ``modbus_map``, the gateways' configuration
sections, the simulator processes, and a registry for the MQTT simulators without the devices
that the adapters reach (docs/adapters.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anju.registry import CityIndex
from gateway.adapters.fromregistry import (
    adapter_devices,
    gbt_section,
    modbus_devices,
    modbus_section,
)


@dataclass
class DemoAdapters:
    city: CityIndex
    gbt_ports: dict[str, int] = field(default_factory=dict)  # gateway -> UITD server port
    modbus_ports: dict[str, int] = field(default_factory=dict)  # elevator -> simulator port
    skip: set[str] = field(default_factory=set)  # devices only the adapters reach

    @classmethod
    def plan(cls, city: CityIndex, free_port: Callable[[], int]) -> DemoAdapters:
        out = cls(city)
        for gw_id, _com in city.gateways():
            if gbt_section(city, gw_id) is not None:
                out.gbt_ports[gw_id] = free_port()
            for dev in modbus_devices(city, gw_id):
                out.modbus_ports[dev] = free_port()
            out.skip |= adapter_devices(city, gw_id)
        return out

    def sections(self, gw_id: str) -> dict[str, Any]:
        """The ``gbt26875`` and ``modbus`` sections of a gateway's configuration."""
        out: dict[str, Any] = {}
        if gw_id in self.gbt_ports:
            out["gbt26875"] = gbt_section(
                self.city, gw_id, host="127.0.0.1", port=self.gbt_ports[gw_id]
            )
        ends = {d: ("127.0.0.1", p) for d, p in self.modbus_ports.items()}
        mb = modbus_section(self.city, gw_id, ends, poll_s=0.5, report_s=30)
        if mb is not None:
            out["modbus"] = mb
        return out

    def endpoints(self) -> dict[str, str]:
        return {gw: f"tcp://127.0.0.1:{p}" for gw, p in self.gbt_ports.items()}

    def fleet_registry(self, registry: Path, out: Path) -> Path:
        """``registry`` without the adapters' devices (for the MQTT simulators)."""
        if not self.skip:
            return registry
        doc = yaml.safe_load(registry.read_text(encoding="utf-8"))
        for com in doc.get("communities", []):
            com["devices"] = [d for d in com.get("devices", []) if d.get("id") not in self.skip]
        out.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "utf-8")
        return out

    def simulators(
        self, *, trap_at_s: float = 60.0, time_scale: float = 1.0
    ) -> list[tuple[str, list[str]]]:
        """(name, argv) of the UITD and Modbus simulator processes; ``time_scale`` (the demo's):
        the UITD scenarios' steps and the trap ``trap_at_s`` come that many times sooner."""
        py = sys.executable
        out: list[tuple[str, list[str]]] = []
        for gw_id, port in self.gbt_ports.items():
            sec = gbt_section(self.city, gw_id) or {}
            for u in sec.get("uitds", []):
                argv = [py, "-m", "device_simulators.uitd", "--connect",
                        f"tcp://127.0.0.1:{port}", "--source", u["source_address"],
                        "--scenario", "demo", "--time-scale", str(time_scale)]  # fmt: skip
                out.append((f"simulators-uitd-{u['device']}", argv))
        for dev, port in self.modbus_ports.items():
            info = self.city.devices[dev]
            argv = [py, "-m", "device_simulators.modbus_elevator", "--port", str(port),
                    "--map", str(info.params["modbus_map"]), "--device", dev,
                    "--floors", str(info.params.get("floors", 18)),
                    "--trap-at", str(trap_at_s / time_scale)]  # fmt: skip
            out.append((f"simulators-modbus-{dev}", argv))
        return out
