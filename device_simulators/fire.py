"""Simulated fire-safety devices: a photoelectric smoke detector and a water-pressure sensor."""

from __future__ import annotations

import random
from typing import ClassVar

from device_simulators.base import DeviceModel, MetricValue, Params, param_float


class SmokeDetector(DeviceModel):
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

    def __init__(
        self,
        device_id: str,
        params: Params,
        *,
        rng: random.Random,
        start_ms: int,
        interval_s: float = 10.0,
        fw: str = "1.0.0",
    ) -> None:
        super().__init__(device_id, rng=rng, start_ms=start_ms, interval_s=interval_s, fw=fw)
        self.alarm_db_m = param_float(device_id, params, "alarm_db_m", self.alarm_db_m)
        self.smoke = False
        self.obscuration_db_m = rng.uniform(0.0, 0.04)
        self.ambient_c = rng.uniform(18.0, 28.0)
        self.temperature_c = self.ambient_c

    def metrics(self) -> dict[str, MetricValue]:
        return {
            "smoke": self.smoke,
            "obscuration_db_m": round(self.obscuration_db_m, 3),
            "temperature_c": round(self.temperature_c, 1),
            "battery_pct": round(self.battery_pct),
        }

    def _advance(self, dt_s: float) -> None:
        rng = self.rng
        if self.smoke:
            # A developing fire: thicker smoke and slowly warmer air.
            self.obscuration_db_m = min(3.0, self.obscuration_db_m + rng.uniform(0.0, 0.05) * dt_s)
            self.temperature_c = min(80.0, self.temperature_c + rng.uniform(0.0, 0.1) * dt_s)
        else:
            drift = rng.gauss(0.0, 0.002) * dt_s**0.5
            settle = (0.02 - self.obscuration_db_m) * min(1.0, 0.05 * dt_s)
            self.obscuration_db_m = min(0.08, max(0.0, self.obscuration_db_m + drift + settle))
            pull = (self.ambient_c - self.temperature_c) * min(1.0, 0.02 * dt_s)
            self.temperature_c += pull + rng.gauss(0.0, 0.02) * dt_s**0.5
        self.battery_pct = max(0.0, self.battery_pct - 2e-7 * dt_s)  # about 6 % a year

    def _inject(self, action: str, params: Params) -> None:
        if action == "smoke":
            if not self.smoke:
                self.smoke = True
                self.obscuration_db_m = max(self.obscuration_db_m, self.alarm_db_m * 1.5)
                self._emit("alarm", {"obscuration_db_m": round(self.obscuration_db_m, 3)})
        elif action == "clear":
            self.smoke = False
            self.obscuration_db_m = min(self.obscuration_db_m, 0.03)
        self._report_soon()


class WaterPressure(DeviceModel):
    """A fire-water pressure sensor on a hydrant or sprinkler main (kind ``water_pressure``).

    A slow leak lowers the pressure and a jockey pump restores it: the pump starts at
    ``pump_on_mpa`` and stops at ``pump_off_mpa`` (defaults 0.28 and 0.35 MPa). Scenario actions:
    ``pressure_drop`` (params ``mpa``, default 0.05: the main loses pressure towards that value,
    pump failed or valve closed), ``restore`` (the pump works again).
    """

    kind: ClassVar[str] = "water_pressure"
    actions: ClassVar[frozenset[str]] = frozenset({"pressure_drop", "restore"})
    event_types: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        device_id: str,
        params: Params,
        *,
        rng: random.Random,
        start_ms: int,
        interval_s: float = 10.0,
        fw: str = "1.0.0",
    ) -> None:
        super().__init__(device_id, rng=rng, start_ms=start_ms, interval_s=interval_s, fw=fw)
        self.pump_on_mpa = param_float(device_id, params, "pump_on_mpa", 0.28)
        self.pump_off_mpa = param_float(device_id, params, "pump_off_mpa", 0.35)
        self.leak_mpa_s = rng.uniform(0.0003, 0.0008)
        self.pump_mpa_s = 0.004
        self.pressure_mpa = rng.uniform(self.pump_on_mpa, self.pump_off_mpa)
        self.pump_on = False
        self.failed_to: float | None = None  # pressure the main falls to after a failure
        self.noise_mpa = 0.0

    def metrics(self) -> dict[str, MetricValue]:
        return {"pressure_mpa": round(max(0.0, self.pressure_mpa + self.noise_mpa), 3)}

    def _advance(self, dt_s: float) -> None:
        self.noise_mpa = self.rng.gauss(0.0, 0.002)  # sensor noise, drawn here to stay seeded
        if self.failed_to is not None:
            self.pressure_mpa = max(self.failed_to, self.pressure_mpa - 0.01 * dt_s)
            return
        if self.pump_on:
            self.pressure_mpa += self.pump_mpa_s * dt_s
            if self.pressure_mpa >= self.pump_off_mpa:
                self.pump_on = False
        else:
            self.pressure_mpa -= self.leak_mpa_s * dt_s
            if self.pressure_mpa <= self.pump_on_mpa:
                self.pump_on = True
        self.battery_pct = max(0.0, self.battery_pct - 2e-7 * dt_s)

    def _inject(self, action: str, params: Params) -> None:
        if action == "pressure_drop":
            self.failed_to = param_float(self.device_id, params, "mpa", 0.05)
            self.pump_on = False
        elif action == "restore":
            self.failed_to = None
            self.pump_on = self.pressure_mpa < self.pump_off_mpa
        self._report_soon()
