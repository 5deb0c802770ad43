"""The faults a scenario can inject into a simulated elevator (see ``elevator.py``).

Kept apart from the car's normal physics so that each stays readable. The car's state lives in
``Elevator``; this base declares what the faults touch.
"""

from __future__ import annotations

import enum
from abc import abstractmethod

from device_simulators.base import (
    DeviceModel,
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

CREEP_SPEED_MPS = 0.3
"""Unintended car movement with the door open: a slow creep until the brake catches it."""


class Phase(enum.Enum):
    IDLE = "idle"
    MOVING = "moving"
    DOOR_OPENING = "door_opening"
    DOOR_OPEN = "door_open"
    DOOR_CLOSING = "door_closing"
    HELD = "held"  # the door is held open by someone
    REOPEN = "reopen"  # door cycling: closed for a moment before it opens again
    STOPPED = "stopped"  # trapped, power outage, a fault: still, wherever the car is


class ElevatorFaults(DeviceModel):
    """Fault injection for ``Elevator``: every fault is undone by ``release``."""

    # The car's state (set by Elevator._setup).
    levels: list[int]
    position: float
    speed_mps: float
    speed_limit_mps: float
    rated_speed_mps: float
    direction: int
    phase: Phase
    phase_left_s: float
    passenger: bool
    service_mode: str
    power: str
    plan: list[tuple[int, bool]]
    calls: list[tuple[int, int]]
    target: int | None
    floor_height_m: float

    # Fault state.
    faulted: bool = False
    """True while a fault holds the car (trapped, overtravel, unintended movement, stall)."""
    door_forced_open: bool = False
    up_limit: bool = False
    down_limit: bool = False
    creep_stop: float | None = None
    cycles_left: int = 0
    run_count: int

    @property
    @abstractmethod
    def nearest(self) -> int: ...

    @property
    @abstractmethod
    def in_door_zone(self) -> bool: ...

    @abstractmethod
    def _open_doors(self) -> None: ...

    @abstractmethod
    def _go(self, target: int) -> None: ...

    def _inject_fault(self, action: str, params: Params) -> None:
        dev = self.device_id
        if action == "trap":
            self._trap(param_bool(dev, params, "between_floors", False))
        elif action == "release":
            self._release()
        elif action == "power_outage":
            self.power = "outage"
            if self.phase is not Phase.IDLE:
                self._stop_here()
            self._report_soon()
        elif action == "power_restore":
            self.power = "normal"
            self._report_soon()
            if self.phase is Phase.STOPPED and not self.faulted:
                self._release()
        elif action == "service_mode":
            mode = param_str(dev, params, "mode", "normal")
            if mode not in SERVICE_MODES:
                raise SimulatorError(
                    dev, f"unknown service_mode {mode!r}; expected one of {sorted(SERVICE_MODES)}"
                )
            self.service_mode = mode
            self._report_soon()
        elif action == "overspeed":
            self._overspeed(param_float(dev, params, "factor", 1.3))
        elif action == "overtravel":
            self._overtravel(param_str(dev, params, "end", "top"))
        elif action == "door_open_moving":
            self._door_open_moving()
        elif action == "stall":
            self._new_fault()
            self.passenger = False
            self.plan = []
            self._move_off_level()
        elif action == "hold_door":
            self._hold_door()
        elif action == "door_cycling":
            self._door_cycling(param_int(dev, params, "cycles", 6))

    def _new_fault(self) -> None:
        """A new fault replaces the one before: limits off, back inside the shaft, stopped."""
        self.up_limit = self.down_limit = False
        self.door_forced_open = False
        self.position = min(max(self.position, 0.0), float(len(self.levels) - 1))
        self._stop_here()
        self.faulted = True

    def _stop_here(self) -> None:
        """An emergency stop: still, wherever the car is."""
        self.phase = Phase.STOPPED
        self.phase_left_s = 0.0
        self.speed_mps = 0.0
        self.speed_limit_mps = self.rated_speed_mps
        self.direction = 0
        self.target = None
        self.creep_stop = None
        self.cycles_left = 0
        self._report_soon()

    def _move_off_level(self) -> None:
        """Put a car that is level at a floor half-way to the next one."""
        if self.in_door_zone:
            step = 0.45 if self.nearest < len(self.levels) - 1 else -0.45
            self.position = self.nearest + step

    def _trap(self, between_floors: bool) -> None:
        self._new_fault()
        self.passenger = True
        self.plan = []
        if between_floors:
            self._move_off_level()
        else:
            self.position = float(self.nearest)

    def _release(self) -> None:
        """A technician levels the car at the nearest floor and opens the door."""
        if not self.faulted and self.phase not in (Phase.STOPPED, Phase.HELD):
            return
        self.faulted = False
        self.door_forced_open = False
        self.up_limit = self.down_limit = False
        self.position = float(self.nearest)
        self._stop_here()
        self.plan = [(self.nearest, False)] if self.passenger else []
        self._open_doors()

    def _overspeed(self, factor: float) -> None:
        if factor <= 1.0:
            raise SimulatorError(self.device_id, f"overspeed factor must exceed 1, got {factor}")
        self.speed_limit_mps = self.rated_speed_mps * factor
        if self.phase is Phase.IDLE and not self.faulted:
            # The longest trip from here, so that the car reaches the excess speed.
            far = 0 if self.position > (len(self.levels) - 1) / 2 else len(self.levels) - 1
            self.plan = [(far, False)]
            self._go(far)

    def _overtravel(self, end: str) -> None:
        if end not in ("top", "bottom"):
            raise SimulatorError(self.device_id, f"overtravel end must be top or bottom: {end!r}")
        self._new_fault()
        self.passenger = False
        self.plan = []
        if end == "top":
            self.position = len(self.levels) - 1 + 0.3
            self.up_limit = True
        else:
            self.position = -0.3
            self.down_limit = True

    def _door_open_moving(self) -> None:
        """The car leaves a landing with its door open (brake or drive control failure)."""
        self._new_fault()
        self.position = float(self.nearest)
        self.door_forced_open = True
        up = self.nearest < len(self.levels) - 1
        self.direction = 1 if up else -1
        self.target = self.nearest + self.direction
        self.creep_stop = self.nearest + self.direction * 0.4
        self.speed_limit_mps = CREEP_SPEED_MPS
        self.phase = Phase.MOVING
        self.run_count += 1
        self._emit("fault", {"code": "05"})

    def _creep_stopped(self) -> None:
        """The unintended-movement brake has caught the car, out of the door zone."""
        assert self.creep_stop is not None
        self.position = self.creep_stop
        self._stop_here()

    def _hold_door(self) -> None:
        if self.faulted or self.phase is Phase.MOVING:
            return
        self.position = float(self.nearest)
        self.phase = Phase.HELD
        self.phase_left_s = 0.0
        self._report_soon()

    def _door_cycling(self, cycles: int) -> None:
        if self.faulted or self.phase is Phase.MOVING or cycles < 1:
            return
        self.plan = []
        self.passenger = False
        self.position = float(self.nearest)
        self.cycles_left = cycles
        self._open_doors()
