"""A simulated access controller at a community gate or a building entrance."""

from __future__ import annotations

from typing import ClassVar

from device_simulators.base import (
    NEVER,
    DeviceModel,
    MetricValue,
    Params,
    next_arrival_ms,
    param_float,
)

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

    Residents arrive at random, more often in the morning and evening rush (``traffic`` param
    times the behaviour's traffic scales the table above): the controller sends
    ``access_granted`` (now and then ``access_denied``), the door opens for a few seconds and
    closes. The door state is reported at once when it changes, and every ``interval_s``.

    Scenario actions: ``door_forced`` (the door opens without a grant and the controller sends
    ``door_forced``), ``hold_open`` (a resident opens the door and wedges it open until
    ``close``), ``close``,
    ``duress`` (a resident opens with the duress code: ``access_granted`` then ``duress``),
    ``tailgating`` (a second person slips in behind a granted one).
    """

    kind: ClassVar[str] = "access_controller"
    actions: ClassVar[frozenset[str]] = frozenset(
        {"door_forced", "hold_open", "close", "duress", "tailgating"}
    )
    event_types: ClassVar[frozenset[str]] = frozenset(
        {"access_granted", "access_denied", "door_forced", "tamper", "duress", "tailgating"}
    )

    def _setup(self, params: Params) -> None:
        self.traffic = param_float(self.device_id, params, "traffic", 1.0) * self.behaviour.traffic
        self.door_open = False
        self.held = False
        self._closes_ms = NEVER
        self._unlock_ms = NEVER
        self._max_rate = max(ENTRIES_PER_MIN_BY_HOUR) * self.traffic / 60.0
        self._next_arrival_ms = next_arrival_ms(self.rng, self.now_ms, self._max_rate)

    def metrics(self) -> dict[str, MetricValue]:
        return {"door": "open" if self.door_open else "closed"}

    def rate_per_s(self) -> float:
        """Arrivals per second at the current local hour."""
        hour = int(((self.now_ms // 1000 + CHINA_UTC_OFFSET_S) % 86400) // 3600)
        return ENTRIES_PER_MIN_BY_HOUR[hour] * self.traffic / 60.0

    def _wake_ms(self) -> int:
        return min(self._closes_ms, self._unlock_ms, self._next_arrival_ms)

    def _advance(self, dt_s: float) -> None:
        rng = self.rng
        if self._t_ms >= self._unlock_ms:
            self._unlock_ms = NEVER
            self._open_for(rng.uniform(3.0, 8.0))
        if self._t_ms >= self._closes_ms:
            self._closes_ms = NEVER
            if not self.held:
                self._set_door(False)
        if self._t_ms >= self._next_arrival_ms:
            self._next_arrival_ms = next_arrival_ms(rng, self._t_ms, self._max_rate)
            # Thinning: accept the candidate with the ratio of the hour's rate to the peak.
            if rng.random() * self._max_rate < self.rate_per_s():
                self._arrival()

    def _arrival(self) -> None:
        rng = self.rng
        method = rng.choice(METHODS)
        if rng.random() < 0.03:
            self._emit("access_denied", {"method": method})
            return
        self._grant(method)

    def _grant(self, method: str) -> None:
        self._emit("access_granted", {"method": method})
        if self.door_open:
            self._closes_ms = max(self._closes_ms, self._t_ms + 5000)
        elif self._unlock_ms == NEVER:
            self._unlock_ms = self._t_ms + int(self.rng.uniform(0.3, 1.5) * 1000)

    def _open_for(self, seconds: float) -> None:
        self._set_door(True)
        self._closes_ms = self._t_ms + int(seconds * 1000)

    def _set_door(self, open_: bool) -> None:
        if open_ != self.door_open:
            self.door_open = open_
            self._report_soon()

    def _inject(self, action: str, params: Params) -> None:
        if action == "door_forced":
            self._unlock_ms = NEVER
            self._emit("door_forced", {})
            self._open_for(self.rng.uniform(5.0, 15.0))
        elif action == "hold_open":
            # A resident opens the door as usual, then wedges it open.
            self.held = True
            self._grant("card")
        elif action == "close":
            self.held = False
            self._unlock_ms = self._closes_ms = NEVER
            self._set_door(False)
        elif action == "duress":
            self._grant("password")
            self._emit("duress", {"method": "password"})
        elif action == "tailgating":
            self._grant("card")
            self._emit("tailgating", {"persons": 2})
