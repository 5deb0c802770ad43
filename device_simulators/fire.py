"""Simulated fire detection: smoke and heat detectors, manual call points (GB 50116 triggers).

Detectors drift slowly in clean air and, now and then, raise a false alarm (steam, dust,
insects) at ``Behaviour.false_alarms_per_year``; a false alarm is a real ``alarm`` event, after
which the air clears by itself within a minute.
"""

from __future__ import annotations

from typing import ClassVar

from device_simulators.base import (
    NEVER,
    YEAR_S,
    DeviceModel,
    MetricValue,
    Params,
    next_arrival_ms,
    param_float,
)


class _Detector(DeviceModel):
    """What smoke and heat detectors share: battery, false alarms that clear by themselves."""

    battery_powered: ClassVar[bool] = True

    def _setup(self, params: Params) -> None:
        self.in_alarm = False
        self._false_rate_per_s = self.behaviour.false_alarms_per_year / YEAR_S
        self._next_false_ms = next_arrival_ms(self.rng, self.now_ms, self._false_rate_per_s)
        self._false_clears_ms = NEVER

    def _wake_ms(self) -> int:
        return min(self._next_false_ms, self._false_clears_ms)

    def _false_alarm_due(self) -> bool:
        """Start or end a false alarm when its time has come; True while one is on."""
        if self._t_ms >= self._false_clears_ms:
            self._false_clears_ms = NEVER
            self._set_alarm(False)
        if self._t_ms >= self._next_false_ms:
            self._next_false_ms = next_arrival_ms(self.rng, self._t_ms, self._false_rate_per_s)
            if not self.in_alarm:
                self._false_clears_ms = self._t_ms + int(self.rng.uniform(20.0, 60.0) * 1000)
                self._set_alarm(True)
        return self._false_clears_ms != NEVER

    def _set_alarm(self, on: bool) -> None:
        raise NotImplementedError


class SmokeDetector(_Detector):
    """A point smoke detector (ALERTS.md kind ``smoke_detector``).

    In clean air the obscuration drifts around a few hundredths of a dB/m. Scenario actions:
    ``smoke`` (obscuration rises past the alarm threshold, ``smoke`` turns true and an ``alarm``
    event is sent at once), ``clear`` (the air clears; the detector reports ``smoke`` false).
    """

    kind: ClassVar[str] = "smoke_detector"
    actions: ClassVar[frozenset[str]] = frozenset({"smoke", "clear"})
    event_types: ClassVar[frozenset[str]] = frozenset({"alarm", "fault", "tamper", "test"})

    alarm_db_m: float = 0.15
    """Obscuration at which the detector alarms (EN 54-7 class detectors: about 0.05-0.2)."""

    def _setup(self, params: Params) -> None:
        super()._setup(params)
        self.alarm_db_m = param_float(self.device_id, params, "alarm_db_m", self.alarm_db_m)
        self.obscuration_db_m = self.rng.uniform(0.0, 0.04)
        self.ambient_c = self.rng.uniform(18.0, 28.0)
        self.temperature_c = self.ambient_c

    def metrics(self) -> dict[str, MetricValue]:
        return {
            "smoke": self.in_alarm,
            "obscuration_db_m": round(self.obscuration_db_m, 3),
            "temperature_c": round(self.temperature_c, 1),
            "battery_pct": round(self.battery_pct),
        }

    def _advance(self, dt_s: float) -> None:
        rng = self.rng
        self._false_alarm_due()
        if self.in_alarm:
            # A developing fire: thicker smoke and slowly warmer air (under 3 degC a minute).
            self.obscuration_db_m = min(3.0, self.obscuration_db_m + rng.uniform(0.0, 0.05) * dt_s)
            self.temperature_c = min(80.0, self.temperature_c + rng.uniform(0.0, 0.05) * dt_s)
        else:
            drift = rng.gauss(0.0, 0.002) * dt_s**0.5
            settle = (0.02 - self.obscuration_db_m) * min(1.0, 0.05 * dt_s)
            self.obscuration_db_m = min(0.08, max(0.0, self.obscuration_db_m + drift + settle))
            pull = (self.ambient_c - self.temperature_c) * min(1.0, 0.02 * dt_s)
            self.temperature_c += pull + rng.gauss(0.0, 0.02) * dt_s**0.5

    def _set_alarm(self, on: bool) -> None:
        if on and not self.in_alarm:
            self.in_alarm = True
            self.obscuration_db_m = max(self.obscuration_db_m, self.alarm_db_m * 1.5)
            self._emit("alarm", {"obscuration_db_m": round(self.obscuration_db_m, 3)})
        elif not on:
            self.in_alarm = False
            self.obscuration_db_m = min(self.obscuration_db_m, 0.03)
        self._report_soon()

    def _inject(self, action: str, params: Params) -> None:
        self._false_clears_ms = NEVER
        self._set_alarm(action == "smoke")


class HeatDetector(_Detector):
    """A point heat detector, fixed temperature and rate of rise (kind ``heat_detector``).

    It alarms at ``alarm_c`` (default 57 degC, class A1) or when the temperature climbs faster
    than ``ror_c_per_min`` (default 10 degC/min) for a minute. Scenario actions: ``fire``
    (``rise_c_per_min``, default 15: the room heats up), ``clear`` (it cools back).
    """

    kind: ClassVar[str] = "heat_detector"
    actions: ClassVar[frozenset[str]] = frozenset({"fire", "clear"})
    event_types: ClassVar[frozenset[str]] = frozenset({"alarm", "fault"})

    def _setup(self, params: Params) -> None:
        super()._setup(params)
        self.alarm_c = param_float(self.device_id, params, "alarm_c", 57.0)
        self.ambient_c = self.rng.uniform(18.0, 30.0)
        self.temperature_c = self.ambient_c
        self.rise_c_per_s = 0.0

    def metrics(self) -> dict[str, MetricValue]:
        return {"temperature_c": round(self.temperature_c, 1)}

    def report_interval_s(self) -> float:
        return min(self.interval_s, 5.0) if self.rise_c_per_s > 0 else self.interval_s

    def _advance(self, dt_s: float) -> None:
        self._false_alarm_due()
        if self.rise_c_per_s > 0:
            self.temperature_c = min(150.0, self.temperature_c + self.rise_c_per_s * dt_s)
            if self.temperature_c >= self.alarm_c and not self.in_alarm:
                self.in_alarm = True
                self._emit("alarm", {"temperature_c": round(self.temperature_c, 1)})
        else:
            pull = (self.ambient_c - self.temperature_c) * min(1.0, 0.02 * dt_s)
            self.temperature_c += pull + self.rng.gauss(0.0, 0.03) * dt_s**0.5

    def _set_alarm(self, on: bool) -> None:
        if on and not self.in_alarm:
            self.in_alarm = True
            self._emit("alarm", {"temperature_c": round(self.temperature_c, 1)})
        elif not on:
            self.in_alarm = False

    def _inject(self, action: str, params: Params) -> None:
        if action == "fire":
            self.rise_c_per_s = param_float(self.device_id, params, "rise_c_per_min", 15.0) / 60
        else:
            self.rise_c_per_s = 0.0
            self.in_alarm = False
        self._report_soon()


class ManualCallPoint(DeviceModel):
    """A manual call point (手动报警按钮, kind ``manual_call_point``): ``press`` sends ``alarm``;
    ``reset`` puts the glass back. Its telemetry is a bare heartbeat."""

    kind: ClassVar[str] = "manual_call_point"
    actions: ClassVar[frozenset[str]] = frozenset({"press", "reset"})
    event_types: ClassVar[frozenset[str]] = frozenset({"alarm"})

    def _setup(self, params: Params) -> None:
        self.pressed = False

    def _inject(self, action: str, params: Params) -> None:
        if action == "press" and not self.pressed:
            self.pressed = True
            self._emit("alarm", {})
        elif action == "reset":
            self.pressed = False
