"""A simulated passenger elevator (ALERTS.md kind ``elevator``).

The car travels between the building's floors with a trapezoidal speed profile (it accelerates
at ``accel_mps2`` up to ``rated_speed_mps`` and brakes to stop level at its target). Landing
calls arrive at random (``calls_per_hour``, scaled by the behaviour's traffic) or from a
scenario: the car goes to the caller's floor, opens, the passenger boards, it travels to the
destination, opens, the passenger leaves. The doors only open when the car is stopped and level
at a floor; ``in_door_zone`` is true only within ``door_zone_m`` of a floor's sill. Outside an
injected fault the car never moves with its doors open and never leaves the shaft.

Floor numbers follow Chinese practice: no floor 0, so a building with ``lowest_floor: -1`` and
``floors: 18`` has the levels -1, 1, 2, ..., 18.

Scenario actions (ElevatorFaults in ``elevator_faults.py`` implements the faults):

- ``traffic`` (``calls_per_hour``): the rate of random landing calls (0: only scripted calls);
- ``call`` (``from``, ``to``: floor numbers): a passenger calls at ``from`` and rides to ``to``;
- ``trap`` (``between_floors``): the car stops with a passenger inside and the door closed;
- ``release``: a technician levels the car at the nearest floor, opens the door and clears
  every fault; passengers leave;
- ``power_outage`` / ``power_restore``, ``service_mode`` (``mode``);
- ``overspeed`` (``factor``, default 1.3): the next trip runs at ``factor`` x rated speed;
- ``overtravel`` (``end``: top or bottom): the car runs past the terminal landing and stops
  on the limit switch;
- ``door_open_moving``: the car creeps away from a landing with its door open until the
  unintended-movement brake stops it out of the door zone (fault code 05);
- ``stall``: the car stops between floors, empty, door closed (position lost);
- ``hold_door``: someone holds the door open (furniture moving) until ``release``;
- ``door_cycling`` (``cycles``, default 6): the door reopens again and again (an obstruction).
"""

from __future__ import annotations

import random
from typing import ClassVar

from device_simulators.base import (
    NEVER,
    Behaviour,
    MetricValue,
    Params,
    SimulatorError,
    next_arrival_ms,
    param_float,
    param_int,
)
from device_simulators.elevator_faults import ElevatorFaults, Phase


class Elevator(ElevatorFaults):
    """An elevator car with doors, a passenger sensor and a controller's counters."""

    kind: ClassVar[str] = "elevator"
    actions: ClassVar[frozenset[str]] = frozenset(
        {
            "traffic",
            "call",
            "trap",
            "release",
            "power_outage",
            "power_restore",
            "service_mode",
            "overspeed",
            "overtravel",
            "door_open_moving",
            "stall",
            "hold_door",
            "door_cycling",
        }
    )
    event_types: ClassVar[frozenset[str]] = frozenset({"alarm_button", "fault"})
    max_step_ms: ClassVar[int] = 200

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
        calls_per_hour: float = 30.0,
        behaviour: Behaviour | None = None,
        fw: str = "1.0.0",
    ) -> None:
        # Kept for _setup, which DeviceModel.__init__ calls (and which checks them).
        self.moving_interval_s = moving_interval_s
        self._calls_per_hour = calls_per_hour
        super().__init__(
            device_id,
            params,
            rng=rng,
            start_ms=start_ms,
            interval_s=idle_interval_s,
            behaviour=behaviour,
            fw=fw,
        )

    def _setup(self, params: Params) -> None:
        dev = self.device_id
        top = param_int(dev, params, "floors", 6)
        lowest = param_int(dev, params, "lowest_floor", 1)
        self.rated_speed_mps = param_float(dev, params, "rated_speed_mps", 1.0)
        self.floor_height_m = param_float(dev, params, "floor_height_m", self.floor_height_m)
        self.levels = [f for f in range(lowest, top + 1) if f != 0]
        if len(self.levels) < 2 or self.rated_speed_mps <= 0 or self.floor_height_m <= 0:
            raise SimulatorError(
                dev,
                f"needs at least two floors, a positive speed and floor height "
                f"(floors={top}, lowest_floor={lowest}, rated_speed_mps={self.rated_speed_mps})",
            )
        if self.moving_interval_s <= 0:
            raise SimulatorError(dev, "moving_interval_s must be positive")
        self.calls_per_s = max(0.0, self._calls_per_hour * self.behaviour.traffic / 3600.0)
        home = self.levels.index(1) if 1 in self.levels else 0
        self.position = float(home)  # index into levels; fractional between floors
        self.speed_mps = 0.0
        self.speed_limit_mps = self.rated_speed_mps
        self.direction = 0  # +1 up, -1 down, 0 none
        self.phase = Phase.IDLE
        self.phase_left_s = 0.0
        self.passenger = False
        self.service_mode = "normal"
        self.power = "normal"
        self.run_count = self.rng.randint(5_000, 200_000)
        self.run_hours = round(self.run_count * self.rng.uniform(0.008, 0.015), 1)
        # The trip being served: (level index, passenger aboard after the doors cycle there).
        self.plan: list[tuple[int, bool]] = []
        self.calls: list[tuple[int, int]] = []  # scripted calls waiting: (from, to) indexes
        self.target: int | None = None
        self._next_call_ms = next_arrival_ms(self.rng, self.now_ms, self.calls_per_s)

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
        return self.door_forced_open or self.phase in (
            Phase.DOOR_OPENING,
            Phase.DOOR_OPEN,
            Phase.DOOR_CLOSING,
            Phase.HELD,
        )

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
            "up_limit": self.up_limit,
            "down_limit": self.down_limit,
            "power": self.power,
            "run_count": self.run_count,
            "run_hours": round(self.run_hours, 3),
        }

    def report_interval_s(self) -> float:
        return self.moving_interval_s if self.moving else self.interval_s

    def _wake_ms(self) -> int:
        if self.phase is not Phase.IDLE and self.phase is not Phase.STOPPED:
            if self.phase is Phase.HELD:
                return NEVER
            return self._t_ms + self.max_step_ms
        if self.phase is Phase.IDLE and self._in_service():
            if self.calls or self.plan:
                return self._t_ms + 1
            return self._next_call_ms
        return NEVER

    # Physics.

    def _advance(self, dt_s: float) -> None:
        if self.phase is Phase.MOVING:
            self._move(dt_s)
            self.run_hours += dt_s / 3600.0
        elif self.phase in (
            Phase.DOOR_OPENING,
            Phase.DOOR_OPEN,
            Phase.DOOR_CLOSING,
            Phase.REOPEN,
        ):
            self.phase_left_s -= dt_s
            if self.phase_left_s <= 0:
                self._next_door_phase()
        elif self.phase is Phase.IDLE and self._in_service():
            if self.plan:
                self._go(self.plan[0][0])
            elif self.calls:
                pickup, dest = self.calls.pop(0)
                self.plan = [(pickup, True), (dest, False)]
                self._go(pickup)
            elif self._t_ms >= self._next_call_ms:
                self._next_call_ms = next_arrival_ms(self.rng, self._t_ms, self.calls_per_s)
                self._new_call()

    def _in_service(self) -> bool:
        return self.service_mode == "normal" and self.power == "normal" and not self.faulted

    def _move(self, dt_s: float) -> None:
        assert self.target is not None
        distance_m = (self.target - self.position) * self.floor_height_m
        remaining = abs(distance_m)
        if remaining < 1e-3:
            self._arrive()
            return
        braking = (2.0 * self.accel_mps2 * remaining) ** 0.5
        self.speed_mps = min(self.speed_limit_mps, self.speed_mps + self.accel_mps2 * dt_s, braking)
        travelled = min(max(self.speed_mps, 0.05) * dt_s, remaining)
        self.position += (travelled if distance_m > 0 else -travelled) / self.floor_height_m
        if self.creep_stop is not None and (self.position - self.creep_stop) * self.direction >= 0:
            self._creep_stopped()
        elif remaining - travelled < 1e-3:
            self._arrive()

    def _arrive(self) -> None:
        assert self.target is not None
        self.position = float(self.target)
        self.speed_mps = 0.0
        self.speed_limit_mps = self.rated_speed_mps
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
            if self.cycles_left > 0:
                self.phase_left_s = 0.5
            if self.plan and self.plan[0][0] == self.nearest:
                self.passenger = self.plan.pop(0)[1]
            self._report_soon()
        elif self.phase is Phase.DOOR_OPEN:
            self.phase = Phase.DOOR_CLOSING
            self.phase_left_s = self.door_move_s
        elif self.phase is Phase.REOPEN:
            self._open_doors()
        else:
            self.phase = Phase.IDLE
            self.phase_left_s = 0.0
            self._report_soon()
            if self.cycles_left > 0:
                self.cycles_left -= 1
                if self.cycles_left > 0:
                    # The door touches closed for a moment, then the obstruction reopens it.
                    self.phase = Phase.REOPEN
                    self.phase_left_s = 1.0

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

    # Scenario actions that are not faults.

    def _inject(self, action: str, params: Params) -> None:
        if action == "traffic":
            self.calls_per_s = param_float(self.device_id, params, "calls_per_hour", 0.0) / 3600
            self._next_call_ms = next_arrival_ms(self.rng, self._t_ms, self.calls_per_s)
        elif action == "call":
            pickup = self._level_index(param_int(self.device_id, params, "from", 1))
            dest = self._level_index(param_int(self.device_id, params, "to", self.levels[-1]))
            self.calls.append((pickup, dest))
        else:
            self._inject_fault(action, params)

    def _level_index(self, floor: int) -> int:
        if floor not in self.levels:
            raise SimulatorError(
                self.device_id,
                f"floor {floor} is not in the building ({self.levels[0]}..{self.levels[-1]})",
            )
        return self.levels.index(floor)
