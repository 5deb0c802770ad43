"""The shared lifecycle of alerts: raise, update, acknowledge, resolve; one open per
(device, type). Pure bookkeeping over in-memory alerts; the store persists what changes."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from anju.contract import AlertState, Audience, Severity
from anju.registry import DeviceInfo
from backend.alerting.model import Clear, Decision, Raise, Update
from backend.alerting.routing import audiences_for

CHINA_TZ = timezone(timedelta(hours=8))


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def rfc3339(ms: int, tz: timezone = CHINA_TZ) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


def parse_rfc3339(text: str) -> int:
    return int(datetime.fromisoformat(text).astimezone(UTC).timestamp() * 1000)


@dataclass(slots=True)
class Alert:
    id: str
    type: str
    severity: Severity
    state: AlertState
    title: str
    device: DeviceInfo
    occurred_at: int
    raised_at: int
    updated_at: int
    evidence: dict[str, Any]
    audiences: list[tuple[Audience, str]]
    acks: list[dict[str, Any]] = field(default_factory=list)
    resolved_at: int | None = None

    def payload(self) -> dict[str, Any]:
        """The subscriber payload of PROTOCOL.md section 2."""
        d = self.device
        return {
            "id": self.id,
            "type": self.type,
            "severity": str(self.severity),
            "state": str(self.state),
            "title": self.title,
            "device_id": d.id,
            "device_kind": d.kind,
            "community_id": d.community_id,
            "community_name": d.community_name,
            "district": d.district,
            "building": d.building,
            "location": d.location,
            "occurred_at": rfc3339(self.occurred_at),
            "raised_at": rfc3339(self.raised_at),
            "updated_at": rfc3339(self.updated_at),
            "evidence": self.evidence,
            "audiences": [{"audience": str(a), "scope": s} for a, s in self.audiences],
            "acks": self.acks,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one alert, to be stored, audited and published, with the alert's payload
    as it was at that change."""

    alert: Alert
    action: str  # raised | updated | acknowledged | escalated | resolved
    actor: str
    payload: dict[str, Any]

    @classmethod
    def of(cls, alert: Alert, action: str, actor: str) -> Change:
        return cls(alert, action, actor, alert.payload())


class AlertBook:
    """Open alerts by (device, type)."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], Alert] = {}
        self.by_id: dict[str, Alert] = {}

    def load(self, alert: Alert) -> None:
        self.open[(alert.device.id, alert.type)] = alert
        self.by_id[alert.id] = alert

    def is_open(self, device_id: str, alert_type: str) -> bool:
        return (device_id, alert_type) in self.open

    def apply(
        self, dev: DeviceInfo, decision: Decision, now_ms: int, lookup: dict[str, DeviceInfo]
    ) -> Change | None:
        """Apply a rule's decision; return the change, or None when nothing changed."""
        if isinstance(decision, Raise):
            key = (dev.id, decision.alert_type)
            existing = self.open.get(key)
            if existing is not None:
                return self._update(existing, dict(decision.evidence), now_ms)
            alert = Alert(
                id=str(uuid7(now_ms)),
                type=decision.alert_type,
                severity=decision.severity,
                state=AlertState.RAISED,
                title=decision.title,
                device=dev,
                occurred_at=decision.occurred_at,
                raised_at=now_ms,
                updated_at=now_ms,
                evidence=dict(decision.evidence),
                audiences=audiences_for(decision.alert_type, decision.severity, dev),
            )
            self.load(alert)
            return Change.of(alert, "raised", "rules")
        if isinstance(decision, Update):
            target = lookup.get(decision.device_id) if decision.device_id else dev
            if target is None:
                return None
            existing = self.open.get((target.id, decision.alert_type))
            if existing is None:
                return None
            return self._update(existing, dict(decision.evidence), now_ms)
        assert isinstance(decision, Clear)
        existing = self.open.get((dev.id, decision.alert_type))
        if existing is None:
            return None
        return self.resolve(existing, now_ms, by="rules", note=decision.reason)

    def _update(self, alert: Alert, evidence: dict[str, Any], now_ms: int) -> Change | None:
        merged = {**alert.evidence, **evidence}
        if merged == alert.evidence:
            return None
        alert.evidence = merged
        alert.updated_at = now_ms
        return Change.of(alert, "updated", "rules")

    def resolve(self, alert: Alert, now_ms: int, *, by: str, note: str) -> Change:
        alert.state = AlertState.RESOLVED
        alert.updated_at = now_ms
        alert.resolved_at = now_ms
        alert.evidence = {**alert.evidence, "resolution": note}
        self.open.pop((alert.device.id, alert.type), None)
        self.by_id.pop(alert.id, None)
        return Change.of(alert, "resolved", by)

    def acknowledge(
        self, alert: Alert, audience: Audience, *, by: str, note: str, now_ms: int
    ) -> Change:
        alert.acks.append(
            {"audience": str(audience), "by": by, "at": rfc3339(now_ms), "note": note}
        )
        if alert.state in (AlertState.RAISED, AlertState.ESCALATED):
            alert.state = AlertState.ACKNOWLEDGED
        alert.updated_at = now_ms
        return Change.of(alert, "acknowledged", by)
