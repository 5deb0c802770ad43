"""The alerting core's vocabulary: inputs, per-device state, and the decisions rules return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anju.contract import Severity


# Inputs are read-only by convention; not frozen, because a frozen dataclass costs about
# 0.5 us more to make, once for every record the rules see.
@dataclass(slots=True)
class Telemetry:
    device_id: str
    ts: int
    metrics: Mapping[str, Any]


@dataclass(slots=True)
class DeviceEvent:
    device_id: str
    ts: int
    type: str
    data: Mapping[str, Any]


@dataclass(slots=True)
class Status:
    """A device's status (``online``, ``fw``, ``battery_pct``), stamped by the gateway."""

    device_id: str
    ts: int
    status: Mapping[str, Any]


@dataclass(slots=True)
class Tick:
    """Device time has advanced to ``ts`` without a reading (timers are due)."""

    device_id: str
    ts: int


Input = Telemetry | DeviceEvent | Status | Tick


@dataclass(frozen=True, slots=True)
class Raise:
    alert_type: str
    severity: Severity
    title: str
    occurred_at: int
    evidence: Mapping[str, Any]
    device_id: str | None = None  # another device (a camera raising on the elevator it watches)


@dataclass(frozen=True, slots=True)
class Update:
    """New evidence for an open alert (of ``device_id`` if given, else of this device)."""

    alert_type: str
    evidence: Mapping[str, Any]
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class Clear:
    alert_type: str
    reason: str
    device_id: str | None = None


Decision = Raise | Update | Clear


@dataclass(slots=True)
class BuildingState:
    """Shared by the devices of one building: recent fire triggers (two-trigger logic)."""

    fire_triggers: list[tuple[int, str, str]] = field(default_factory=list)  # (ts, source, dev)

    def to_json(self) -> dict[str, Any]:
        return {"fire_triggers": [list(t) for t in self.fire_triggers]}

    def load_json(self, doc: Mapping[str, Any]) -> None:
        self.fire_triggers[:] = [(int(t[0]), str(t[1]), str(t[2])) for t in doc["fire_triggers"]]


@dataclass(slots=True)
class DeviceState:
    """What the rules remember about one device: plain values only, so that it can be written
    to the database and read back after a restart (``to_json`` / ``load_json``).

    - ``values``: the last value of every metric;
    - ``since``: timers (device ms) keyed by the rule that owns them;
    - ``mem``: small windows and counters (lists of numbers) keyed by the rule;
    - ``open``: the alert types the rules consider active on this device.
    """

    values: dict[str, Any] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)
    mem: dict[str, Any] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    last_ts: int = 0
    offset_ms: int = 0  # gateway receive time minus device time, for timers between readings
    last_rx: int = 0  # gateway receive time of the last record (liveness)
    building: BuildingState = field(default_factory=BuildingState)

    def to_json(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "since": self.since,
            "mem": self.mem,
            "open": sorted(self.open),
            "last_ts": self.last_ts,
            "offset_ms": self.offset_ms,
            "last_rx": self.last_rx,
        }

    def load_json(self, doc: Mapping[str, Any]) -> None:
        self.values = dict(doc.get("values", {}))
        self.since = {str(k): int(v) for k, v in doc.get("since", {}).items()}
        self.mem = dict(doc.get("mem", {}))
        self.open = set(doc.get("open", []))
        self.last_ts = int(doc.get("last_ts", 0))
        self.offset_ms = int(doc.get("offset_ms", 0))
        self.last_rx = int(doc.get("last_rx", 0))
