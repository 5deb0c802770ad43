"""What every simulated device shares: messages, the clock, periodic reports, generic actions.

A model is a plain object driven by the caller's clock: ``step(now_ms)`` advances it to device
time ``now_ms`` and returns the messages it would have published on the way, each stamped with
the device time at which it happened. Nothing here does I/O, sleeps or reads the wall clock, so
a model is tested by calling ``step`` with made-up times.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeAlias

from anju.errors import AnjuError

Channel: TypeAlias = Literal["telemetry", "event", "status"]
Payload: TypeAlias = dict[str, Any]
Message: TypeAlias = tuple[Channel, Payload]
"""(channel, payload) as published on ``anju/dev/{device_id}/{channel}`` (PROTOCOL.md 1)."""

MetricValue: TypeAlias = float | int | bool | str
Params: TypeAlias = Mapping[str, str | int | float | bool]

GENERIC_ACTIONS: frozenset[str] = frozenset({"event", "offline", "online"})
"""Actions every model accepts: ``event`` (params: ``type`` and the event's data), ``offline``
(the device falls silent and its Last Will ``{"online": false}`` is published), ``online``."""


class SimulatorError(AnjuError):
    """A simulator was asked for something it cannot do (an unknown action, a bad parameter)."""

    def __init__(self, device_id: str, message: str) -> None:
        super().__init__(f"{device_id}: {message}")
        self.device_id = device_id


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


class DeviceModel(ABC):
    """Base of all device models.

    Subclasses implement ``_advance(dt_s)`` (the physics over a short step), ``metrics()`` (the
    telemetry now) and ``_inject(action, params)`` (their own scenario actions), and set
    ``kind``, ``actions`` and ``event_types``. Reports are periodic (``report_interval_s``) and
    also sent at once after a change the subclass flags with ``_report_soon()``.
    """

    kind: ClassVar[str]
    actions: ClassVar[frozenset[str]]
    """Kind-specific scenario actions (besides GENERIC_ACTIONS)."""
    event_types: ClassVar[frozenset[str]]
    """Event types of ALERTS.md this kind may send (checked by the generic ``event`` action)."""
    max_step_s: ClassVar[float] = 1.0
    battery_powered: ClassVar[bool] = True

    def __init__(
        self,
        device_id: str,
        *,
        rng: random.Random,
        start_ms: int,
        interval_s: float = 10.0,
        fw: str = "1.0.0",
    ) -> None:
        if interval_s <= 0:
            raise SimulatorError(device_id, f"interval_s must be positive, got {interval_s}")
        self.device_id = device_id
        self.rng = rng
        self.interval_s = interval_s
        self.fw = fw
        self.online = True
        self.battery_pct = rng.uniform(60.0, 100.0) if self.battery_powered else 100.0
        self._t_ms = start_ms
        # Spread the first reports so that a city's devices do not all speak at once.
        self._next_report_ms = start_ms + int(rng.uniform(0.0, interval_s) * 1000)
        self._out: list[Message] = []

    @property
    def now_ms(self) -> int:
        """The model's device time (milliseconds since the epoch)."""
        return self._t_ms

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

    def step(self, now_ms: int) -> list[Message]:
        """Advance to device time ``now_ms``; return what was published on the way, in order.

        A time earlier than the model's own is ignored (the model never goes back in time).
        """
        self._run_until(now_ms)
        out, self._out = self._out, []
        return out

    def inject(self, action: str, params: Params, now_ms: int) -> None:
        """Apply a scenario action at device time ``now_ms``.

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
            self.online = False
            self._out.append(("status", {"online": False}))
        elif action == "online":
            self.online = True
            self._out.append(("status", self.status()))
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

    @abstractmethod
    def metrics(self) -> dict[str, MetricValue]:
        """The telemetry metrics now (ALERTS.md canonical names)."""

    @abstractmethod
    def _advance(self, dt_s: float) -> None:
        """Move the physics on by ``dt_s`` seconds (at most ``max_step_s``)."""

    @abstractmethod
    def _inject(self, action: str, params: Params) -> None:
        """Apply one of ``actions`` at the model's current time."""

    def _emit(self, event_type: str, data: Payload | None = None) -> None:
        """Send an event stamped with the current device time (nothing while offline)."""
        if self.online:
            self._out.append(
                ("event", {"ts": self._t_ms, "type": event_type, "data": dict(data or {})})
            )

    def _report_soon(self) -> None:
        """Send telemetry at the end of the current step (report on change)."""
        self._next_report_ms = min(self._next_report_ms, self._t_ms)

    # The clock.

    def _run_until(self, end_ms: int) -> None:
        max_step_ms = max(1, int(self.max_step_s * 1000))
        while True:
            if self._next_report_ms <= self._t_ms:
                self._report()
            if self._t_ms >= end_ms:
                return
            stop = min(end_ms, self._next_report_ms, self._t_ms + max_step_ms)
            self._advance((stop - self._t_ms) / 1000.0)
            self._t_ms = stop

    def _report(self) -> None:
        if self.online:
            self._out.append(("telemetry", {"ts": self._t_ms, "metrics": self.metrics()}))
        self._next_report_ms = self._t_ms + max(1, int(self.report_interval_s() * 1000))
