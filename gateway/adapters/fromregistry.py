"""The adapters' configuration sections from a registry (the demo and the tests use it; a
real gateway's file can be written the same way).

- A ``fire_panel`` with ``params.source_address`` (12 hex digits, the 6 address bytes in frame
  order) is a UITD of the ``gbt26875`` section.
- A device with ``params.panel`` (a fire_panel's id), ``system_addr`` and ``component_addr`` is
  one of that panel's components: its analog values are its own telemetry, and the panel's
  events about it carry its building and location.
- An ``elevator`` with ``params.modbus_map`` (``builtin:NAME`` or a path) is polled over Modbus
  TCP at the address the caller gives for it.
"""

from __future__ import annotations

from typing import Any

from anju.registry import CityIndex, Scalar


def _int(v: Scalar | None, default: int) -> int:
    return int(v) if isinstance(v, int | float | str) and str(v).isdigit() else default


def gbt_section(
    city: CityIndex, gateway_id: str, *, host: str = "127.0.0.1", port: int = 0
) -> dict[str, Any] | None:
    """The ``gbt26875`` section for a gateway, or None when it has no UITD."""
    devices = city.gateway_devices(gateway_id)
    panels = [d for d in devices if d.kind == "fire_panel" and "source_address" in d.params]
    if not panels:
        return None
    uitds = []
    for p in panels:
        comps = [
            {
                "system_addr": _int(d.params.get("system_addr"), 1),
                "component_addr": _int(d.params.get("component_addr"), 0),
                "device": d.id,
                **({"building": d.building} if d.building else {}),
                **({"location": d.location} if d.location else {}),
            }
            for d in devices
            if d.params.get("panel") == p.id
        ]
        uitds.append(
            {"source_address": str(p.params["source_address"]), "device": p.id, "components": comps}
        )
    return {"host": host, "port": port, "uitds": uitds}


def modbus_devices(city: CityIndex, gateway_id: str) -> list[str]:
    return [
        d.id
        for d in city.gateway_devices(gateway_id)
        if d.kind == "elevator" and "modbus_map" in d.params
    ]


def modbus_section(
    city: CityIndex,
    gateway_id: str,
    endpoints: dict[str, tuple[str, int]],
    **options: Any,
) -> dict[str, Any] | None:
    """The ``modbus`` section: one controller per elevator with ``modbus_map`` and an
    endpoint in ``endpoints`` (device id -> (host, port))."""
    ctl = []
    for d in city.gateway_devices(gateway_id):
        if d.id in endpoints and "modbus_map" in d.params:
            host, port = endpoints[d.id]
            ctl.append(
                {"device": d.id, "host": host, "port": port, "map": str(d.params["modbus_map"]),
                 **options}
            )  # fmt: skip
    return {"controllers": ctl} if ctl else None


def adapter_devices(city: CityIndex, gateway_id: str) -> set[str]:
    """Devices reached only through the adapters (simulators must not play them over MQTT)."""
    devices = city.gateway_devices(gateway_id)
    panels = {d.id for d in devices if d.kind == "fire_panel" and "source_address" in d.params}
    comps = {d.id for d in devices if d.params.get("panel") in panels}
    return panels | comps | set(modbus_devices(city, gateway_id))
