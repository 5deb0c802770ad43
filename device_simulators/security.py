"""Simulated security devices: AI cameras, emergency buttons and perimeter detectors.

None of them has telemetry of its own: their periodic telemetry is a bare heartbeat
(``{"ts": ..., "metrics": {}}``) so that the backend knows they are alive.
"""

from __future__ import annotations

from typing import ClassVar

from device_simulators.base import (
    NEVER,
    DeviceModel,
    Params,
    SimulatorError,
    next_arrival_ms,
    param_float,
    param_int,
    param_str,
)

CAMERA_ZONES: frozenset[str] = frozenset({"elevator", "corridor", "entrance"})


class Camera(DeviceModel):
    """A camera with video analytics (kind ``camera``; ``params.elevator`` names the car it
    watches). At ``Behaviour.camera_events_per_hour`` it sees an e-bike at an entrance or in a
    corridor, which raises nothing by itself.

    Scenario actions: ``ebike`` (``zone``, default elevator; ``count``, default 3; ``every_s``,
    default 2: the analytics reports the bike on consecutive frames), ``lane_blocked``,
    ``lane_clear``; every other camera event through the generic ``event`` action.
    """

    kind: ClassVar[str] = "camera"
    actions: ClassVar[frozenset[str]] = frozenset({"ebike", "lane_blocked", "lane_clear"})
    event_types: ClassVar[frozenset[str]] = frozenset(
        {
            "ebike_detected",
            "ebike_charging",
            "fire_lane_blocked",
            "fire_lane_clear",
            "object_thrown",
            "perimeter_intrusion",
            "smoke_or_fire",
        }
    )

    def _setup(self, params: Params) -> None:
        self.rate_per_s = self.behaviour.camera_events_per_hour / 3600
        self._next_random_ms = next_arrival_ms(self.rng, self.now_ms, self.rate_per_s)
        self.sightings: list[tuple[int, str]] = []  # (due ms, zone)

    def _wake_ms(self) -> int:
        return min(self._next_random_ms, min((t for t, _ in self.sightings), default=NEVER))

    def _advance(self, dt_s: float) -> None:
        if self._t_ms >= self._next_random_ms:
            self._next_random_ms = next_arrival_ms(self.rng, self._t_ms, self.rate_per_s)
            self._emit("ebike_detected", {"zone": self.rng.choice(["corridor", "entrance"])})
        due = [s for s in self.sightings if s[0] <= self._t_ms]
        self.sightings = [s for s in self.sightings if s[0] > self._t_ms]
        for _, zone in due:
            self._emit("ebike_detected", {"zone": zone})

    def _inject(self, action: str, params: Params) -> None:
        dev = self.device_id
        if action == "ebike":
            zone = param_str(dev, params, "zone", "elevator")
            if zone not in CAMERA_ZONES:
                raise SimulatorError(dev, f"zone must be one of {sorted(CAMERA_ZONES)}: {zone!r}")
            every_ms = int(param_float(dev, params, "every_s", 2.0) * 1000)
            count = param_int(dev, params, "count", 3)
            self._emit("ebike_detected", {"zone": zone})
            self.sightings += [(self._t_ms + i * every_ms, zone) for i in range(1, count)]
        elif action == "lane_blocked":
            self._emit("fire_lane_blocked", {})
        elif action == "lane_clear":
            self._emit("fire_lane_clear", {})


class EmergencyButton(DeviceModel):
    """A latching emergency (panic) button (kind ``emergency_button``): ``press`` sends
    ``pressed``, ``reset`` (a guard's key) sends ``reset``."""

    kind: ClassVar[str] = "emergency_button"
    actions: ClassVar[frozenset[str]] = frozenset({"press", "reset"})
    event_types: ClassVar[frozenset[str]] = frozenset({"pressed", "reset"})

    def _setup(self, params: Params) -> None:
        self.latched = False

    def _inject(self, action: str, params: Params) -> None:
        if action == "press" and not self.latched:
            self.latched = True
            self._emit("pressed", {})
        elif action == "reset" and self.latched:
            self.latched = False
            self._emit("reset", {})


class Perimeter(DeviceModel):
    """A perimeter intrusion detector on a fence (kind ``perimeter``, e.g. an infrared beam
    pair or a vibration cable): ``intrusion`` (``zone``, default 1) sends ``intrusion``."""

    kind: ClassVar[str] = "perimeter"
    actions: ClassVar[frozenset[str]] = frozenset({"intrusion"})
    event_types: ClassVar[frozenset[str]] = frozenset({"intrusion", "tamper"})

    def _inject(self, action: str, params: Params) -> None:
        self._emit("intrusion", {"zone": param_int(self.device_id, params, "zone", 1)})
