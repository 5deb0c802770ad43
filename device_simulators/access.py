"""A simulated access controller at a community gate or a building entrance."""

from __future__ import annotations

import random
from typing import ClassVar

from device_simulators.base import DeviceModel, MetricValue, Params, param_float

CHINA_UTC_OFFSET_S = 8 * 3600
"""Residents keep Beijing time (UTC+08:00, no daylight saving)."""

ENTRIES_PER_MIN_BY_HOUR: tuple[float, ...] = (
    0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 1.0, 2.5, 2.5, 1.2, 0.8, 1.0,
    1.5, 1.0, 0.8, 0.8, 1.0, 2.0, 2.5, 1.8, 1.5, 1.0, 0.5, 0.2,
)  # fmt: skip
"""Mean passes through a busy community gate per minute, by local hour."""

METHODS: tuple[str, ...] = ("card", "face", "app", "password")


class AccessController(DeviceModel):
    """A door with a reader (ALERTS.md kind ``access_controller``).

    Residents arrive at random, more often in the morning and evening rush: the controller sends
    ``access_granted`` (now and then ``access_denied``), the door opens for a few seconds and
    closes. The door state is reported at once when it changes, and every ``interval_s``.
    Scenario actions: ``door_forced`` (the door opens without a grant and the controller sends
    ``door_forced``), ``hold_open`` (the door stays open until ``close``), ``close``.
    """

    kind: ClassVar[str] = "access_controller"
    actions: ClassVar[frozenset[str]] = frozenset({"door_forced", "hold_open", "close"})
    event_types: ClassVar[frozenset[str]] = frozenset(
        {"access_granted", "access_denied", "door_forced", "tamper", "duress", "tailgating"}
    )
    battery_powered: ClassVar[bool] = False

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
        self.traffic = param_float(device_id, params, "traffic", 1.0)
        self.door_open = False
        self.open_left_s = 0.0
        self.held = False
        self.unlock_in_s: float | None = None

    def metrics(self) -> dict[str, MetricValue]:
        return {"door": "open" if self.door_open else "closed"}

    def rate_per_s(self) -> float:
        """Arrivals per second at the current local hour."""
        hour = int(((self.now_ms // 1000 + CHINA_UTC_OFFSET_S) % 86400) // 3600)
        return ENTRIES_PER_MIN_BY_HOUR[hour] * self.traffic / 60.0

    def _advance(self, dt_s: float) -> None:
        rng = self.rng
        if self.unlock_in_s is not None:
            self.unlock_in_s -= dt_s
            if self.unlock_in_s <= 0:
                self.unlock_in_s = None
                self._set_door(open_=True, for_s=rng.uniform(3.0, 8.0))
        elif self.door_open and not self.held:
            self.open_left_s -= dt_s
            if self.open_left_s <= 0:
                self._set_door(open_=False)
        if rng.random() < self.rate_per_s() * dt_s:
            method = rng.choice(METHODS)
            if rng.random() < 0.03:
                self._emit("access_denied", {"method": method})
            else:
                self._emit("access_granted", {"method": method})
                if not self.door_open:
                    self.unlock_in_s = rng.uniform(0.3, 1.5)
                else:
                    self.open_left_s = max(self.open_left_s, rng.uniform(3.0, 8.0))

    def _set_door(self, *, open_: bool, for_s: float = 0.0) -> None:
        if open_ != self.door_open:
            self._report_soon()
        self.door_open = open_
        self.open_left_s = for_s

    def _inject(self, action: str, params: Params) -> None:
        if action == "door_forced":
            self.unlock_in_s = None
            self._set_door(open_=True, for_s=self.rng.uniform(5.0, 15.0))
            self._emit("door_forced")
        elif action == "hold_open":
            self.unlock_in_s = None
            self.held = True
            self._set_door(open_=True)
        elif action == "close":
            self.held = False
            self.unlock_in_s = None
            self._set_door(open_=False)
