"""The alerting core's vocabulary: inputs, per-device state, and the decisions rules return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anju.contract import Severity


@dataclass(frozen=True, slots=True)
class Telemetry:
    device_id: str
    ts: int
    metrics: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device_id: str
    ts: int
    type: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Tick:
    """Device time has advanced to ``ts`` without a reading (timers are due)."""

    device_id: str
    ts: int


Input = Telemetry | DeviceEvent | Tick


@dataclass(frozen=True, slots=True)
class Raise:
    alert_type: str
    severity: Severity
    title: str
    occurred_at: int
    evidence: Mapping[str, Any]


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


Decision = Raise | Update | Clear


@dataclass(slots=True)
class BuildingState:
    """Shared by the devices of one building: recent fire triggers (two-trigger logic)."""

    fire_triggers: list[tuple[int, str, str]] = field(default_factory=list)  # (ts, source, dev)


@dataclass(slots=True)
class DeviceState:
    """What the rules remember about one device. Serialisable (a dict of plain values)."""

    values: dict[str, Any] = field(default_factory=dict)
    since: dict[str, int] = field(default_factory=dict)
    open: set[str] = field(default_factory=set)
    last_ts: int = 0
    offset_ms: int = 0  # gateway receive time minus device time, for timers between readings
    building: BuildingState = field(default_factory=BuildingState)
