"""What every simulated device shares: messages, the clock, periodic reports, generic actions.

A model is a plain object driven by the caller's clock: ``step(now_ms)`` advances it to device
time ``now_ms`` and returns the messages it would have published on the way, each stamped with
the device time at which it happened. ``due_ms()`` says when the model next has something to
do (a report, a moving car's next physics step, a scheduled arrival), so a city runner only
steps the devices that are due. Nothing here does I/O, sleeps or reads the wall clock, so a
model is tested by calling ``step`` with made-up times.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeAlias

from anju.errors import AnjuError

Channel: TypeAlias = Literal["telemetry", "event", "status"]
Payload: TypeAlias = dict[str, Any]
Message: TypeAlias = tuple[Channel, Payload]
"""(channel, payload) as published on ``anju/dev/{device_id}/{channel}`` (PROTOCOL.md 1)."""

MetricValue: TypeAlias = float | int | bool | str
Params: TypeAlias = Mapping[str, str | int | float | bool]

NEVER: Final = 2**62
"""A due time that never comes."""
YEAR_S: Final = 365 * 86400.0

GENERIC_ACTIONS: frozenset[str] = frozenset(
    {"event", "offline", "online", "silent", "battery", "clock_offset"}
)
"""Actions every model accepts:

- ``event`` (params: ``type`` and the event's data): the device sends that event;
- ``offline``: the device drops off and the broker publishes its Last Will ``{"online": false}``;
- ``silent``: the device stops sending anything, with no Last Will (a hung firmware);
- ``online``: back from ``offline`` or ``silent``; the retained status is published again;
- ``battery`` (params ``pct``, and ``drain_pct_per_h`` to make it run down from there);
- ``clock_offset`` (params ``s``): the device clock runs ``s`` seconds ahead (negative: behind).
"""


class SimulatorError(AnjuError):
    """A simulator was asked for something it cannot do (an unknown action, a bad parameter)."""

    def __init__(self, device_id: str, message: str) -> None:
        super().__init__(f"{device_id}: {message}")
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Background behaviour that is not a scenario's fault: realistic noise, on by default.

    A false alarm is a real ``alarm`` event and raises a real ``fire.alarm``; scenario tests
    use ``Behaviour.quiet()`` so that only the scenario's faults raise alerts.
    """

    false_alarms_per_year: float = 0.2
    """Per smoke or heat detector (steam, dust, insects). Field figures: 0.1-1 a year."""
    camera_events_per_hour: float = 0.5
    """Per camera: e-bikes seen at an entrance or in a corridor (no alert by themselves)."""
    traffic: float = 1.0
    """Multiplier for elevator calls and people at access-controlled doors."""

    @classmethod
    def quiet(cls) -> Behaviour:
        """No false alarms and no random camera events; traffic as usual."""
        return cls(false_alarms_per_year=0.0, camera_events_per_hour=0.0)


def param_float(device_id: str, params: Params, key: str, default: float) -> float:
    """A numeric parameter, or ``default`` when absent."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SimulatorError(device_id, f"param {key!r} must be a number, got {value!r}")
    return float(value)


def param_int(device_id: str, params: Params, key: str, default: int) -> int:
    """An integer parameter, or ``default`` when absent."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulatorError(device_id, f"param {key!r} must be an integer, got {value!r}")
    return value


def param_bool(device_id: str, params: Params, key: str, default: bool) -> bool:
    """A boolean parameter, or ``default`` when absent."""
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise SimulatorError(device_id, f"param {key!r} must be true or false, got {value!r}")
    return value


def param_str(device_id: str, params: Params, key: str, default: str) -> str:
    """A string parameter, or ``default`` when absent."""
    value = params.get(key, default)
    if not isinstance(value, str):
        raise SimulatorError(device_id, f"param {key!r} must be a string, got {value!r}")
    return value


def next_arrival_ms(rng: random.Random, now_ms: int, per_s: float) -> int:
    """When the next event of a Poisson process with rate ``per_s`` happens (NEVER if 0)."""
    if per_s <= 0:
        return NEVER
    return now_ms + max(1, int(rng.expovariate(per_s) * 1000))


class DeviceModel(ABC):
    """Base of all device models.

    Every model is built the same way, ``Model(device_id, params, rng=..., start_ms=...,
    interval_s=..., behaviour=..., fw=...)``, so that a fleet builds any kind alike. This
    ``__init__`` sets the state every device has (clocks, battery, first report time) and then
    calls ``_setup(params)``, where a subclass reads its registry ``params`` and sets its own
    state; subclasses do not override ``__init__`` (the elevator does, only to take its two
    report intervals, and passes the rest on).

    Subclasses implement ``_inject(action, params)`` (their own scenario actions) and set
    ``kind``, ``actions`` and ``event_types``. They override ``metrics()`` when they have
    telemetry (the default, ``{}``, makes a bare heartbeat), ``_advance(dt_s)`` when something
    happens with time (what happened in the step that just ended at ``now_ms``; the default
    does nothing) and ``_wake_ms()`` when something must happen before the next report.
    Reports are periodic (``report_interval_s``) and also sent at once after a change the
    subclass flags with ``_report_soon()``.
    """

    kind: ClassVar[str]
    actions: ClassVar[frozenset[str]]
    """Kind-specific scenario actions (besides GENERIC_ACTIONS)."""
    event_types: ClassVar[frozenset[str]]
    """Event types of ALERTS.md this kind may send (checked by the generic ``event`` action)."""
    battery_powered: ClassVar[bool] = False
    battery_drain_pct_per_h: ClassVar[float] = 0.0007  # about 6 % a year

    def __init__(
        self,
        device_id: str,
        params: Params,
        *,
        rng: random.Random,
        start_ms: int,
        interval_s: float = 10.0,
        behaviour: Behaviour | None = None,
        fw: str = "1.0.0",
    ) -> None:
        if interval_s <= 0:
            raise SimulatorError(device_id, f"interval_s must be positive, got {interval_s}")
        self.device_id = device_id
        self.rng = rng
        self.interval_s = interval_s
        self.behaviour = behaviour or Behaviour()
        self.fw = fw
        self.online = True
        self.silent = False
        self.clock_offset_ms = 0
        self.battery_pct = rng.uniform(60.0, 100.0) if self.battery_powered else 100.0
        self.drain_pct_per_h = self.battery_drain_pct_per_h
        self._status_batt = round(self.battery_pct)
        self._t_ms = start_ms
        # Spread the first reports so that a city's devices do not all speak at once.
        self._next_report_ms = start_ms + int(rng.uniform(0.0, interval_s) * 1000)
        self._out: list[Message] = []
        # Last, so that a model's own random draws follow the common ones (seeded streams).
        self._setup(params)

    @property
    def now_ms(self) -> int:
        """The model's true time (milliseconds since the epoch); its clock may be off."""
        return self._t_ms

    @property
    def stamp_ms(self) -> int:
        """The device clock's reading now (``now_ms`` plus any clock offset)."""
        return self._t_ms + self.clock_offset_ms

    @property
    def speaking(self) -> bool:
        return self.online and not self.silent

    @property
    def pending(self) -> bool:
        """Messages are waiting (caused by ``inject``) for the next ``step``."""
        return bool(self._out)

    @property
    def all_actions(self) -> frozenset[str]:
        return self.actions | GENERIC_ACTIONS

    def status(self) -> Payload:
        """The retained status payload."""
        if not self.online:
            return {"online": False}
        out: Payload = {"online": True, "fw": self.fw}
        if self.battery_powered:
            out["battery_pct"] = round(self.battery_pct)
        return out

    def report_interval_s(self) -> float:
        """Seconds until the next periodic report, given the state now."""
        return self.interval_s

    def due_ms(self) -> int:
        """The earliest time at which ``step`` has something to do."""
        return min(self._next_report_ms, self._wake_ms())

    def step(self, now_ms: int) -> list[Message]:
        """Advance to time ``now_ms``; return what was published on the way, in order.

        A time earlier than the model's own is ignored (the model never goes back in time).
        """
        self._run_until(now_ms)
        out, self._out = self._out, []
        return out

    def inject(self, action: str, params: Params, now_ms: int) -> None:
        """Apply a scenario action at time ``now_ms``.

        The model first advances to ``now_ms``; messages the action causes come out of the next
        ``step``. Raises SimulatorError for an action this kind does not know.
        """
        self._run_until(now_ms)
        if action == "event":
            etype = param_str(self.device_id, params, "type", "")
            if etype not in self.event_types:
                raise SimulatorError(
                    self.device_id,
                    f"{self.kind} does not send event {etype!r}; "
                    f"expected one of {sorted(self.event_types)}",
                )
            self._emit(etype, {k: v for k, v in params.items() if k != "type"})
        elif action == "offline":
            if self.online and not self.silent:
                self._out.append(("status", {"online": False}))
            self.online = False
        elif action == "silent":
            self.silent = True
        elif action == "online":
            self.online = True
            self.silent = False
            self._out.append(("status", self.status()))
            self._report_soon()
        elif action == "battery":
            self.battery_pct = param_float(self.device_id, params, "pct", self.battery_pct)
            self.drain_pct_per_h = param_float(
                self.device_id, params, "drain_pct_per_h", self.drain_pct_per_h
            )
            self._battery_changed()
            self._report_soon()
        elif action == "clock_offset":
            self.clock_offset_ms = int(param_float(self.device_id, params, "s", 0.0) * 1000)
            self._report_soon()
        elif action in self.actions:
            self._inject(action, params)
        else:
            raise SimulatorError(
                self.device_id,
                f"unknown action {action!r} for a {self.kind}; "
                f"expected one of {sorted(self.all_actions)}",
            )

    # For subclasses.

    def _setup(self, params: Params) -> None:
        """Read the kind's registry ``params`` and set its own state (none by default).

        Called once, at the end of ``__init__``: ``device_id``, ``rng``, ``behaviour`` and the
        clock (``now_ms``, the start time) are set by then.
        """
        return

    def metrics(self) -> dict[str, MetricValue]:
        """The telemetry metrics now (ALERTS.md canonical names); {} for a bare heartbeat."""
        return {}

    def _advance(self, dt_s: float) -> None:
        """What happened during the ``dt_s`` seconds that end at ``now_ms`` (nothing here)."""
        return

    @abstractmethod
    def _inject(self, action: str, params: Params) -> None:
        """Apply one of ``actions`` at the model's current time."""

    def _wake_ms(self) -> int:
        """The next time the model must run before its next report (NEVER when idle)."""
        return NEVER

    def _emit(self, event_type: str, data: Payload | None = None) -> None:
        """Send an event stamped with the device clock (nothing while offline or silent)."""
        if self.speaking:
            self._out.append(
                ("event", {"ts": self.stamp_ms, "type": event_type, "data": dict(data or {})})
            )

    def _report_soon(self) -> None:
        """Send telemetry at the end of the current step (report on change)."""
        self._next_report_ms = min(self._next_report_ms, self._t_ms)

    def _battery_changed(self) -> None:
        """Republish the retained status when the whole-percent battery level changes."""
        pct = round(self.battery_pct)
        if self.battery_powered and pct != self._status_batt:
            self._status_batt = pct
            if self.speaking:
                self._out.append(("status", self.status()))

    # The clock.

    def _run_until(self, end_ms: int) -> None:
        while True:
            if self._next_report_ms <= self._t_ms:
                self._report()
            if self._t_ms >= end_ms:
                return
            stop = min(end_ms, self._next_report_ms, max(self._t_ms + 1, self._wake_ms()))
            dt_s = (stop - self._t_ms) / 1000.0
            self._t_ms = stop
            self._advance(dt_s)
            if self.battery_powered and self.drain_pct_per_h > 0:
                self.battery_pct = max(0.0, self.battery_pct - self.drain_pct_per_h * dt_s / 3600)
                self._battery_changed()

    def _report(self) -> None:
        if self.speaking:
            self._out.append(("telemetry", {"ts": self.stamp_ms, "metrics": self.metrics()}))
        self._next_report_ms = self._t_ms + max(1, int(self.report_interval_s() * 1000))
