"""A simulated passenger elevator (ALERTS.md kind ``elevator``).

The car travels between the building's floors with a trapezoidal speed profile (it accelerates
at ``accel_mps2`` up to ``rated_speed_mps`` and brakes to stop level at its target). Random
landing calls arrive while it is idle: the car goes to the caller's floor, opens, the passenger
boards, it travels to the destination, opens, the passenger leaves. The doors only open when the
car is stopped and level at a floor; ``in_door_zone`` is true only within ``door_zone_m`` of a
floor's sill.

Floor numbers follow Chinese practice: no floor 0, so a building with ``lowest_floor: -1`` and
``floors: 18`` has the levels -1, 1, 2, ..., 18.

Scenario actions: ``trap`` (params ``between_floors``: the car stops where it is, or half-way to
the next floor when it is in a door zone, with a passenger inside and the door closed),
``release`` (the car is levelled, the door opens and the passenger leaves),
``power_outage`` / ``power_restore``, ``service_mode`` (params ``mode``).
"""

from __future__ import annotations

import enum
import math
import random
from typing import ClassVar

from device_simulators.base import (
    DeviceModel,
    MetricValue,
    Params,
    SimulatorError,
    param_bool,
    param_float,
    param_int,
    param_str,
)

SERVICE_MODES: frozenset[str] = frozenset(
    {
        "normal",
        "inspection",
        "fire_return",
        "firefighter",
        "emergency_power",
        "earthquake",
        "out_of_service",
        "unknown",
    }
)


class Phase(enum.Enum):
    IDLE = "idle"
    MOVING = "moving"
    DOOR_OPENING = "door_opening"
    DOOR_OPEN = "door_open"
    DOOR_CLOSING = "door_closing"
    STOPPED = "stopped"  # trapped, power outage, or out of service: still, door closed


class Elevator(DeviceModel):
    """An elevator car with doors, a passenger sensor and a controller's counters."""

    kind: ClassVar[str] = "elevator"
    actions: ClassVar[frozenset[str]] = frozenset(
        {"trap", "release", "power_outage", "power_restore", "service_mode"}
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"alarm_button", "fault"})
    max_step_s: ClassVar[float] = 0.2
    battery_powered: ClassVar[bool] = False

    floor_height_m: float = 3.0
    door_zone_m: float = 0.1
    accel_mps2: float = 0.8
    door_move_s: float = 2.0

    def __init__(
        self,
        device_id: str,
        params: Params,
        *,
        rng: random.Random,
        start_ms: int,
        moving_interval_s: float = 1.0,
        idle_interval_s: float = 2.0,
        call_rate_per_s: float = 1.0 / 30.0,
        fw: str = "1.0.0",
    ) -> None:
        super().__init__(device_id, rng=rng, start_ms=start_ms, interval_s=idle_interval_s, fw=fw)
        top = param_int(device_id, params, "floors", 6)
        lowest = param_int(device_id, params, "lowest_floor", 1)
        self.rated_speed_mps = param_float(device_id, params, "rated_speed_mps", 1.0)
        self.floor_height_m = param_float(device_id, params, "floor_height_m", self.floor_height_m)
        self.levels = [f for f in range(lowest, top + 1) if f != 0]
        if len(self.levels) < 2 or self.rated_speed_mps <= 0 or self.floor_height_m <= 0:
            raise SimulatorError(
                device_id,
                f"needs at least two floors, a positive speed and floor height "
                f"(floors={top}, lowest_floor={lowest}, rated_speed_mps={self.rated_speed_mps})",
            )
        if moving_interval_s <= 0:
            raise SimulatorError(device_id, "moving_interval_s must be positive")
        self.moving_interval_s = moving_interval_s
        self.call_rate_per_s = call_rate_per_s
        home = self.levels.index(1) if 1 in self.levels else 0
        self.position = float(home)  # index into levels; fractional between floors
        self.speed_mps = 0.0
        self.direction = 0  # +1 up, -1 down, 0 none
        self.phase = Phase.IDLE
        self.phase_left_s = 0.0
        self.passenger = False
        self.service_mode = "normal"
        self.power = "normal"
        self.trapped = False
        self.run_count = rng.randint(5_000, 200_000)
        self.run_hours = round(self.run_count * rng.uniform(0.008, 0.015), 1)
        # The trip being served: (level index, passenger aboard after the doors cycle there).
        self.plan: list[tuple[int, bool]] = []
        self.target: int | None = None

    # Observations.

    @property
    def nearest(self) -> int:
        return min(max(round(self.position), 0), len(self.levels) - 1)

    @property
    def offset_m(self) -> float:
        """Distance from the nearest floor's sill, in metres."""
        return abs(self.position - self.nearest) * self.floor_height_m

    @property
    def in_door_zone(self) -> bool:
        return self.offset_m <= self.door_zone_m

    @property
    def moving(self) -> bool:
        return self.phase is Phase.MOVING

    @property
    def door_open(self) -> bool:
        return self.phase in (Phase.DOOR_OPENING, Phase.DOOR_OPEN, Phase.DOOR_CLOSING)

    def metrics(self) -> dict[str, MetricValue]:
        return {
            "moving": self.moving,
            "direction": {1: "up", -1: "down"}.get(self.direction, "none"),
            "floor": self.levels[self.nearest],
            "in_door_zone": self.in_door_zone,
            "door": "open" if self.door_open else "closed",
            "passenger": self.passenger,
            "service_mode": self.service_mode,
            "speed_mps": round(self.speed_mps, 3),
            "up_limit": False,
            "down_limit": False,
            "power": self.power,
            "run_count": self.run_count,
            "run_hours": round(self.run_hours, 3),
        }

    def report_interval_s(self) -> float:
        return self.moving_interval_s if self.moving else self.interval_s

    # Physics.

    def _advance(self, dt_s: float) -> None:
        if self.phase is Phase.MOVING:
            self._move(dt_s)
            self.run_hours += dt_s / 3600.0
        elif self.phase in (Phase.DOOR_OPENING, Phase.DOOR_OPEN, Phase.DOOR_CLOSING):
            self.phase_left_s -= dt_s
            if self.phase_left_s <= 0:
                self._next_door_phase()
        elif (
            self.phase is Phase.IDLE
            and self._in_service()
            and self.rng.random() < self.call_rate_per_s * dt_s
        ):
            self._new_call()

    def _in_service(self) -> bool:
        return self.service_mode == "normal" and self.power == "normal" and not self.trapped

    def _move(self, dt_s: float) -> None:
        assert self.target is not None
        distance_m = (self.target - self.position) * self.floor_height_m
        remaining = abs(distance_m)
        if remaining < 1e-3:
            self._arrive()
            return
        braking = math.sqrt(2.0 * self.accel_mps2 * remaining)
        self.speed_mps = min(self.rated_speed_mps, self.speed_mps + self.accel_mps2 * dt_s, braking)
        travelled = min(max(self.speed_mps, 0.05) * dt_s, remaining)
        self.position += math.copysign(travelled, distance_m) / self.floor_height_m
        if remaining - travelled < 1e-3:
            self._arrive()

    def _arrive(self) -> None:
        assert self.target is not None
        self.position = float(self.target)
        self.speed_mps = 0.0
        self.direction = 0
        self.target = None
        self._open_doors()

    def _open_doors(self) -> None:
        self.phase = Phase.DOOR_OPENING
        self.phase_left_s = self.door_move_s
        self._report_soon()

    def _next_door_phase(self) -> None:
        if self.phase is Phase.DOOR_OPENING:
            self.phase = Phase.DOOR_OPEN
            self.phase_left_s = self.rng.uniform(3.0, 7.0)
            if self.plan and self.plan[0][0] == self.nearest:
                self.passenger = self.plan.pop(0)[1]
        elif self.phase is Phase.DOOR_OPEN:
            self.phase = Phase.DOOR_CLOSING
            self.phase_left_s = self.door_move_s
        else:
            self.phase = Phase.IDLE
            self.phase_left_s = 0.0
            self._report_soon()
            # A trip under way is finished even if the service mode changed meanwhile.
            if self.plan and self.power == "normal" and not self.trapped:
                self._go(self.plan[0][0])

    def _new_call(self) -> None:
        n = len(self.levels)
        pickup = self.rng.randrange(n)
        dest = self.rng.choice([i for i in range(n) if i != pickup])
        self.plan = [(pickup, True), (dest, False)]
        self._go(pickup)

    def _go(self, target: int) -> None:
        if target == self.nearest and self.in_door_zone:
            self.position = float(target)
            self._open_doors()
            return
        self.target = target
        self.direction = 1 if target > self.position else -1
        self.phase = Phase.MOVING
        self.run_count += 1
        self._report_soon()

    def _stop_here(self) -> None:
        """An emergency stop: still, doors closed, wherever the car is."""
        self.phase = Phase.STOPPED
        self.phase_left_s = 0.0
        self.speed_mps = 0.0
        self.direction = 0
        self.target = None
        self._report_soon()

    # Scenario actions.

    def _inject(self, action: str, params: Params) -> None:
        if action == "trap":
            self._trap(param_bool(self.device_id, params, "between_floors", False))
        elif action == "release":
            self._release()
        elif action == "power_outage":
            self.power = "outage"
            if self.phase is not Phase.IDLE:
                self._stop_here()
            self._report_soon()
        elif action == "power_restore":
            self.power = "normal"
            self._resume()
        elif action == "service_mode":
            mode = param_str(self.device_id, params, "mode", "normal")
            if mode not in SERVICE_MODES:
                raise SimulatorError(
                    self.device_id,
                    f"unknown service_mode {mode!r}; expected one of {sorted(SERVICE_MODES)}",
                )
            self.service_mode = mode
            self._report_soon()

    def _trap(self, between_floors: bool) -> None:
        self._stop_here()
        self.trapped = True
        self.passenger = True
        self.plan = []
        if between_floors:
            if self.in_door_zone:
                step = 0.45 if self.nearest < len(self.levels) - 1 else -0.45
                self.position = self.nearest + step
        else:
            self.position = float(self.nearest)

    def _release(self) -> None:
        if not self.trapped and self.phase is not Phase.STOPPED:
            return
        self.trapped = False
        self.position = float(self.nearest)
        self.speed_mps = 0.0
        self.direction = 0
        self.target = None
        self.plan = [(self.nearest, False)] if self.passenger else []
        self._open_doors()

    def _resume(self) -> None:
        """After power returns: level at the nearest floor and let passengers out."""
        self._report_soon()
        if self.phase is Phase.STOPPED and not self.trapped:
            self._release()
