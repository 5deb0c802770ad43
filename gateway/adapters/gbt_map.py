"""GB/T 26875.3 data units -> anju records (ALERTS.md, kind ``fire_panel``). Pure: no I/O, no
clock (the caller passes its receive time and whether its clock is trusted).

- Status words (units 1, 2, 21) become events on the rising edge of each bit: ``fire``,
  ``fault``, ``disabled``, ``supervisory``, ``start``, ``feedback``, ``power_fault`` (with
  ``power``: main, backup, bus or component) and ``reset``. When a component's last trouble bit
  falls it sends ``normal`` (``enabled`` when ``disabled`` falls). The last status word of each
  component is kept in ``PanelState`` (bounded), one per UITD connection.
- Operations (units 4, 24): ``reset`` for the reset flag, ``operation`` for the others.
- Analog values (unit 3) become telemetry with canonical names (``pressure_mpa``,
  ``level_m``, ``temperature_c``, ``residual_current_ma``, ``cable_temp_c``, ...). A component
  bound to a registry device (a ``water_pressure`` or ``electrical_fire`` device) reports on
  that device under the plain name, so that its own rules run; otherwise on the panel device
  as ``<name>_<system_addr>_<component_addr>``.
- An empty ``send`` frame or a UITD status (unit 21) is a heartbeat: a status record.
- The UITD's software version (25) goes in a status (``fw``); its clock (28) as a telemetry
  record stamped with the UITD's time (so ``device.clock_skew`` works).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from anju.uplink import Kind, record_body
from gateway.adapters import gbt_tables as T
from gateway.adapters.gbt26875 import (
    ComponentAnalog,
    ComponentStatus,
    DataUnit,
    SystemOperation,
    SystemStatus,
    Time,
    UitdOperation,
    UitdStatus,
    UitdTime,
    UitdVersion,
    decode_description,
)
from gateway.outbox import EVENTS, TELEMETRY
from gateway.validate import device_time

_STATE_MAX: Final = 4096
_ELECTRICAL: Final = frozenset({16, 17, 18})


@dataclass(frozen=True, slots=True)
class Component:
    """Where a panel component is: its own registry device (for analog values), building and
    location (added to its events)."""

    device: str | None = None
    building: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class AnalogOverride:
    """A deployment's reading of an analog type: metric name and factor from the raw value."""

    metric: str
    scale: float


@dataclass(frozen=True, slots=True)
class Binding:
    """A UITD as configured: its fire_panel device and its components."""

    device_id: str
    utc_offset_min: int = 480
    components: Mapping[tuple[int, int], Component] = field(default_factory=dict)
    analog: Mapping[int, AnalogOverride] = field(default_factory=dict)


Out = tuple[int, str]  # (lane, record body)


class PanelState:
    """The last status word per component of one UITD (edge detection)."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding
        self.last: OrderedDict[tuple[int, ...], int] = OrderedDict()

    def _edge(self, key: tuple[int, ...], status: int) -> tuple[int, int]:
        prev = self.last.pop(key, None)
        self.last[key] = status
        while len(self.last) > _STATE_MAX:
            self.last.popitem(last=False)
        return (0 if prev is None else prev), status

    def heartbeat(self, rx_ms: int) -> list[Out]:
        return [self._rec("s", rx_ms, True, {"s": {"online": True}}, rx_ms)]

    def records(self, unit: DataUnit, *, rx_ms: int, clock_trusted: bool) -> list[Out]:
        out: list[Out] = []
        for o in unit.objects:
            out.extend(self._object(unit.type, o, rx_ms, clock_trusted))
        return out

    # ---- per object ---------------------------------------------------------------------------

    def _ts(self, t: Time, rx_ms: int, trusted: bool) -> tuple[int, bool]:
        fix = device_time(t.epoch_ms(self.binding.utc_offset_min), rx_ms, clock_trusted=trusted)
        return fix.ts, fix.gateway_timed

    def _object(self, kind: int, o: Any, rx: int, trusted: bool) -> list[Out]:
        base: dict[str, Any]
        if isinstance(o, SystemStatus):
            ts, gt = self._ts(o.time, rx, trusted)
            base = _where(o.system_type, o.system_addr)
            prev, cur = self._edge((1, o.system_type, o.system_addr), o.status)
            return self._events(T.SYSTEM_STATUS_BITS, prev, cur, base, ts, gt, rx)
        if isinstance(o, ComponentStatus):
            ts, gt = self._ts(o.time, rx, trusted)
            base = self._component(o.system_type, o.system_addr, o.component_type, o.component_addr)
            base["text"] = decode_description(o.description)
            key = (2, o.system_type, o.system_addr, o.component_type, o.component_addr)
            prev, cur = self._edge(key, o.status)
            return self._events(T.COMPONENT_STATUS_BITS, prev, cur, base, ts, gt, rx)
        if isinstance(o, UitdStatus):
            ts, gt = self._ts(o.time, rx, trusted)
            prev, cur = self._edge((21,), o.status)
            base = {"system_type": "uitd"}
            out = self._events(T.UITD_STATUS_BITS, prev, cur, base, ts, gt, rx)
            return out + self.heartbeat(rx)
        if isinstance(o, SystemOperation | UitdOperation):
            ts, gt = self._ts(o.time, rx, trusted)
            bits = T.SYSTEM_OPERATION_BITS if kind == 4 else T.UITD_OPERATION_BITS
            names = [n for b, n in bits.items() if o.flags >> b & 1]
            if isinstance(o, SystemOperation):
                base = _where(o.system_type, o.system_addr)
            else:
                base = {"system_type": "uitd"}
            out = []
            if "reset" in names:
                out.append(self._rec("e", ts, gt, {"e": "reset", "x": base}, rx))
            rest = [n for n in names if n != "reset"]
            if rest:
                x = {**base, "operation": rest, "operator": o.operator}
                out.append(self._rec("e", ts, gt, {"e": "operation", "x": x}, rx))
            return out
        if isinstance(o, ComponentAnalog):
            return self._analog(o, rx, trusted)
        if isinstance(o, UitdVersion):
            status = {"online": True, "fw": f"{o.major}.{o.minor}"}
            return [self._rec("s", rx, True, {"s": status}, rx)]
        if isinstance(o, UitdTime) and kind == 28:
            ts, gt = self._ts(o.time, rx, trusted)
            return [self._rec("t", ts, gt, {"m": {"clock_check": 1}}, rx)]
        return []  # versions, configurations and times of the systems: counted, not stored

    def _component(self, st: int, sa: int, ct: int, ca: int) -> dict[str, Any]:
        d = _where(st, sa)
        d["component_type"] = T.component_type_name(ct)
        d["component_type_code"] = ct
        d["component_addr"] = ca
        place = self.binding.components.get((sa, ca))
        if place is not None:
            if place.building is not None:
                d["building"] = place.building
            if place.location is not None:
                d["location"] = place.location
        return d

    def _events(
        self,
        bits: Mapping[int, str],
        prev: int,
        cur: int,
        base: dict[str, Any],
        ts: int,
        gt: bool,
        rx: int,
    ) -> list[Out]:
        out: list[Out] = []
        rising = cur & ~prev
        falling = prev & ~cur
        for bit, name in bits.items():
            if not rising >> bit & 1:
                continue
            event, _, power = name.partition(":")
            if event not in _EVENT_NAMES:
                continue
            x = {**base, "power": power} if power else base
            out.append(self._rec("e", ts, gt, {"e": event, "x": x}, rx))
        trouble = {b for b, n in bits.items() if n.partition(":")[0] in T.TROUBLE_EVENTS}
        if any(falling >> b & 1 for b in trouble) and not any(cur >> b & 1 for b in trouble):
            out.append(self._rec("e", ts, gt, {"e": "normal", "x": base}, rx))
        dis = next((b for b, n in bits.items() if n == "disabled"), None)
        if dis is not None and falling >> dis & 1:
            out.append(self._rec("e", ts, gt, {"e": "enabled", "x": base}, rx))
        return out

    def _analog(self, o: ComponentAnalog, rx: int, trusted: bool) -> list[Out]:
        ts, gt = self._ts(o.time, rx, trusted)
        name, value = _analog_value(o, self.binding.analog)
        place = self.binding.components.get((o.system_addr, o.component_addr))
        if place is not None and place.device is not None:
            return [self._rec("t", ts, gt, {"m": {name: value}}, rx, place.device)]
        metric = f"{name}_{o.system_addr}_{o.component_addr}"
        return [self._rec("t", ts, gt, {"m": {metric: value}}, rx)]

    def _rec(
        self, kind: Kind, ts: int, gt: bool, payload: dict[str, Any], rx: int, dev: str = ""
    ) -> Out:
        body = record_body(
            device_id=dev or self.binding.device_id,
            kind=kind,
            ts=ts,
            rx=rx,
            gateway_timed=gt,
            payload=payload,
        )
        return (TELEMETRY if kind == "t" else EVENTS), body


_EVENT_NAMES: Final = frozenset(
    {"fire", "fault", "disabled", "supervisory", "start", "feedback", "power_fault", "reset"}
)


def _where(st: int, sa: int) -> dict[str, Any]:
    return {"system_type": T.system_type_name(st), "system_type_code": st, "system_addr": sa}


def _analog_value(o: ComponentAnalog, overrides: Mapping[int, AnalogOverride]) -> tuple[str, float]:
    """The canonical metric name and value of an analog reading (see docs/adapters.md)."""
    ov = overrides.get(o.analog_type)
    if ov is not None:
        return ov.metric, round(o.value * ov.scale, 6)
    t, v, ct = o.analog_type, o.value, o.component_type
    if t == 4:
        return "pressure_mpa", round(v * 0.1, 4)
    if t == 5:
        return "pressure_mpa", round(v * 0.0001, 4)
    if t == 2:
        return "level_m", round(v * 0.01, 3)
    if t == 3:
        return ("cable_temp_c" if ct in _ELECTRICAL else "temperature_c"), round(v * 0.1, 2)
    if t == 9:
        if ct in _ELECTRICAL:
            return "residual_current_ma", round(v * 100.0, 1)
        return "current_a", round(v * 0.1, 2)
    simple = {
        1: ("event_count", 1.0),
        6: ("gas_lel_pct", 0.1),
        7: ("time_s", 1.0),
        8: ("voltage_v", 0.1),
        10: ("flow_l_s", 0.1),
        11: ("air_m3_min", 0.1),
        12: ("wind_mps", 1.0),
    }
    if t in simple:
        name, scale = simple[t]
        return name, round(v * scale, 3)
    return f"analog_{t}", float(v)
