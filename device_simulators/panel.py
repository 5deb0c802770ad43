"""Simulated fire-panel transmission device, electrical fire monitor and fire door.

The fire panel stands for a fire alarm control panel seen through its user information
transmission device (GB/T 26875.3). Its events carry ``system_type``, ``system_addr``,
``component_type``, ``component_addr`` and ``text``; the type and address values here are
illustrative names and numbers, not the standard's code tables (the GB/T 26875.3 adapter in the
gateway maps the real codes).
"""

from __future__ import annotations

from typing import ClassVar

from device_simulators.base import (
    NEVER,
    DeviceModel,
    MetricValue,
    Params,
    next_arrival_ms,
    param_bool,
    param_float,
    param_int,
    param_str,
)


class FirePanel(DeviceModel):
    """A fire alarm control panel (kind ``fire_panel``): heartbeats with the sprinkler main's
    pressure, and events from its components.

    Scenario actions, each with optional ``component_addr`` (int), ``component_type`` and
    ``text``: ``fire``, ``fault``, ``power_fault`` (``text`` e.g. main or backup supply),
    ``disabled``, ``supervisory``, ``start`` (a linkage start, e.g. a smoke exhaust fan; its
    ``feedback`` follows after ``feedback_s``, default 2 s, unless ``no_feedback: true``),
    ``reset``.
    """

    kind: ClassVar[str] = "fire_panel"
    actions: ClassVar[frozenset[str]] = frozenset(
        {"fire", "fault", "power_fault", "disabled", "supervisory", "start", "reset"}
    )
    event_types: ClassVar[frozenset[str]] = frozenset(
        {"fire", "fault", "disabled", "supervisory", "start", "feedback", "reset", "power_fault"}
    )

    DEFAULT_COMPONENT: ClassVar[dict[str, str]] = {
        "fire": "smoke_detector",
        "fault": "smoke_detector",
        "power_fault": "power_supply",
        "disabled": "smoke_detector",
        "supervisory": "signal_valve",
        "start": "smoke_exhaust_fan",
        "reset": "controller",
    }

    def _setup(self, params: Params) -> None:
        self.system_addr = param_int(self.device_id, params, "system_addr", 1)
        self.pressure_mpa = self.rng.uniform(0.30, 0.40)
        self.feedbacks: list[tuple[int, dict[str, object]]] = []  # (due ms, event data)

    def metrics(self) -> dict[str, MetricValue]:
        return {"pressure_mpa": round(self.pressure_mpa, 3)}

    def _wake_ms(self) -> int:
        return min((t for t, _ in self.feedbacks), default=NEVER)

    def _advance(self, dt_s: float) -> None:
        self.pressure_mpa += self.rng.gauss(0.0, 0.001) * dt_s**0.5
        self.pressure_mpa = min(0.45, max(0.25, self.pressure_mpa))
        due = [f for f in self.feedbacks if f[0] <= self._t_ms]
        self.feedbacks = [f for f in self.feedbacks if f[0] > self._t_ms]
        for _, data in due:
            self._emit("feedback", dict(data))

    def _inject(self, action: str, params: Params) -> None:
        dev = self.device_id
        data: dict[str, object] = {
            "system_type": "fire_alarm",
            "system_addr": self.system_addr,
            "component_type": param_str(
                dev, params, "component_type", self.DEFAULT_COMPONENT[action]
            ),
            "component_addr": param_int(dev, params, "component_addr", 1),
            "text": param_str(dev, params, "text", action),
        }
        self._emit(action, data)
        if action == "start" and not param_bool(dev, params, "no_feedback", False):
            delay_ms = int(param_float(dev, params, "feedback_s", 2.0) * 1000)
            self.feedbacks.append((self._t_ms + delay_ms, data))


class ElectricalFire(DeviceModel):
    """An electrical fire monitoring detector on a distribution board (``electrical_fire``).

    Residual current wanders with the load (tens of mA); cable temperature follows the load
    too. It sends ``alarm`` when a reading crosses its own limit (``residual_limit_ma`` 300,
    ``temp_limit_c`` 80). Scenario actions: ``leakage`` (``ma``, default 450), ``overheat``
    (``c``, default 95), ``normal``.
    """

    kind: ClassVar[str] = "electrical_fire"
    actions: ClassVar[frozenset[str]] = frozenset({"leakage", "overheat", "normal"})
    event_types: ClassVar[frozenset[str]] = frozenset({"alarm"})

    def _setup(self, params: Params) -> None:
        dev = self.device_id
        self.residual_limit_ma = param_float(dev, params, "residual_limit_ma", 300.0)
        self.temp_limit_c = param_float(dev, params, "temp_limit_c", 80.0)
        self.base_ma = self.rng.uniform(15.0, 80.0)
        self.base_c = self.rng.uniform(28.0, 42.0)
        self.fault_ma: float | None = None
        self.fault_c: float | None = None
        self.residual_ma = self.base_ma
        self.cable_c = self.base_c
        self.alarmed = False

    def metrics(self) -> dict[str, MetricValue]:
        return {
            "residual_current_ma": round(self.residual_ma, 1),
            "cable_temp_c": round(self.cable_c, 1),
        }

    def _advance(self, dt_s: float) -> None:
        rng = self.rng
        ma = self.fault_ma if self.fault_ma is not None else self.base_ma
        c = self.fault_c if self.fault_c is not None else self.base_c
        self.residual_ma = max(0.0, ma + rng.gauss(0.0, 3.0))
        self.cable_c = c + rng.gauss(0.0, 0.3)
        over = self.residual_ma >= self.residual_limit_ma or self.cable_c >= self.temp_limit_c
        if over and not self.alarmed:
            self._emit("alarm", self.metrics())
        self.alarmed = over

    def _inject(self, action: str, params: Params) -> None:
        if action == "leakage":
            self.fault_ma = param_float(self.device_id, params, "ma", 450.0)
        elif action == "overheat":
            self.fault_c = param_float(self.device_id, params, "c", 95.0)
        else:
            self.fault_ma = self.fault_c = None
        self._advance(0.0)
        self._report_soon()


class FireDoor(DeviceModel):
    """A normally-closed fire door with a magnetic contact (kind ``fire_door``).

    Residents pass through now and then (the door opens for a few seconds and its closer shuts
    it). Scenario actions: ``prop_open`` (wedged open until ``close``), ``close``.
    """

    kind: ClassVar[str] = "fire_door"
    actions: ClassVar[frozenset[str]] = frozenset({"prop_open", "close"})
    event_types: ClassVar[frozenset[str]] = frozenset()
    battery_powered: ClassVar[bool] = True
    passes_per_hour: ClassVar[float] = 2.0

    def _setup(self, params: Params) -> None:
        self.rate_per_s = self.passes_per_hour * self.behaviour.traffic / 3600
        self.door_open = False
        self.propped = False
        self._closes_ms = NEVER
        self._next_pass_ms = next_arrival_ms(self.rng, self.now_ms, self.rate_per_s)

    def metrics(self) -> dict[str, MetricValue]:
        return {"door": "open" if self.door_open else "closed"}

    def _wake_ms(self) -> int:
        return min(self._closes_ms, self._next_pass_ms)

    def _advance(self, dt_s: float) -> None:
        if self._t_ms >= self._closes_ms:
            self._closes_ms = NEVER
            if not self.propped:
                self._set(False)
        if self._t_ms >= self._next_pass_ms:
            self._next_pass_ms = next_arrival_ms(self.rng, self._t_ms, self.rate_per_s)
            if not self.door_open:
                self._set(True)
                self._closes_ms = self._t_ms + int(self.rng.uniform(3.0, 10.0) * 1000)

    def _set(self, open_: bool) -> None:
        if open_ != self.door_open:
            self.door_open = open_
            self._report_soon()

    def _inject(self, action: str, params: Params) -> None:
        self.propped = action == "prop_open"
        self._closes_ms = NEVER
        self._set(self.propped)
