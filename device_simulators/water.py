"""A simulated fire-water pressure sensor on a hydrant or sprinkler main (``water_pressure``)."""

from __future__ import annotations

from typing import ClassVar

from device_simulators.base import (
    DeviceModel,
    MetricValue,
    Params,
    param_float,
)


class WaterPressure(DeviceModel):
    """A slow leak lowers the pressure and a jockey pump restores it: the pump starts at
    ``pump_on_mpa`` and stops at ``pump_off_mpa`` (defaults 0.28 and 0.35 MPa).

    Scenario actions: ``pump_failure`` (params ``mpa``, default 0.05: the pump has failed or a
    valve is closed, and the main loses pressure towards that value; ``pressure_drop`` is the
    same), ``restore`` (the pump works again and refills the main).
    """

    kind: ClassVar[str] = "water_pressure"
    actions: ClassVar[frozenset[str]] = frozenset({"pump_failure", "pressure_drop", "restore"})
    event_types: ClassVar[frozenset[str]] = frozenset()
    battery_powered: ClassVar[bool] = True
    max_step_ms: ClassVar[int] = 2000

    def _setup(self, params: Params) -> None:
        self.pump_on_mpa = param_float(self.device_id, params, "pump_on_mpa", 0.28)
        self.pump_off_mpa = param_float(self.device_id, params, "pump_off_mpa", 0.35)
        self.leak_mpa_s = self.rng.uniform(0.0003, 0.0008)
        self.pump_mpa_s = 0.004
        self.pressure_mpa = self.rng.uniform(self.pump_on_mpa, self.pump_off_mpa)
        self.pump_on = False
        self.failed_to: float | None = None  # pressure the main falls to after a failure
        self.noise_mpa = 0.0

    def metrics(self) -> dict[str, MetricValue]:
        return {"pressure_mpa": round(max(0.0, self.pressure_mpa + self.noise_mpa), 3)}

    def _wake_ms(self) -> int:
        return self._t_ms + self.max_step_ms

    def _advance(self, dt_s: float) -> None:
        self.noise_mpa = self.rng.gauss(0.0, 0.002)  # sensor noise, drawn here to stay seeded
        if self.failed_to is not None:
            self.pressure_mpa = max(self.failed_to, self.pressure_mpa - 0.01 * dt_s)
            return
        if self.pump_on:
            self.pressure_mpa = min(self.pump_off_mpa, self.pressure_mpa + self.pump_mpa_s * dt_s)
            if self.pressure_mpa >= self.pump_off_mpa:
                self.pump_on = False
        else:
            self.pressure_mpa -= self.leak_mpa_s * dt_s
            if self.pressure_mpa <= self.pump_on_mpa:
                self.pump_on = True

    def _inject(self, action: str, params: Params) -> None:
        if action in ("pump_failure", "pressure_drop"):
            self.failed_to = param_float(self.device_id, params, "mpa", 0.05)
            self.pump_on = False
        elif action == "restore":
            self.failed_to = None
            self.pump_on = self.pressure_mpa < self.pump_off_mpa
            self.pump_mpa_s = 0.01  # the main pump refills faster than the jockey pump
        self._report_soon()
