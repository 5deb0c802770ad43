"""The shared lifecycle of alerts: raise, update, acknowledge, resolve; one open per
(device, type). Pure bookkeeping over in-memory alerts; the store persists what changes."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from anju.contract import AlertState, Audience, Severity
from anju.now import now_ms as wall_ms
from anju.registry import DeviceInfo
from backend.alerting.catalog import ACK_DEADLINE_MS, FIRE_ACK_DEADLINE_MS, LATCHING
from backend.alerting.errors import AlertNotFound, NotAnAudience
from backend.alerting.model import Clear, Raise
from backend.alerting.routing import audiences_for, escalation_audiences

CHINA_TZ = timezone(timedelta(hours=8))


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7)."""
    ms = wall_ms() if now_ms is None else now_ms
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
            "evidence": dict(self.evidence),
            "audiences": [{"audience": str(a), "scope": s} for a, s in self.audiences],
            "acks": [dict(a) for a in self.acks],
        }


@dataclass(frozen=True, slots=True)
class AlertRow:
    """The alert's own columns as they were at a change."""

    severity: str
    state: str
    occurred_at: int
    raised_at: int
    updated_at: int
    resolved_at: int | None


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one alert, to be stored, audited and published, with the alert's payload
    and columns as they were at that change: copies, since the alert itself changes on (an
    acknowledgement from the API, the next reading) while the change waits to be stored on
    the alarm lane's thread."""

    alert: Alert
    action: str  # raised | updated | acknowledged | escalated | resolved
    actor: str
    payload: dict[str, Any]
    row: AlertRow

    @classmethod
    def of(cls, alert: Alert, action: str, actor: str) -> Change:
        a = alert
        row = AlertRow(
            str(a.severity), str(a.state), a.occurred_at, a.raised_at, a.updated_at, a.resolved_at
        )
        return cls(alert, action, actor, a.payload(), row)


_RANK: Final = {Severity.INFO: 0, Severity.MINOR: 1, Severity.MAJOR: 2, Severity.CRITICAL: 3}


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Acknowledgement deadlines of critical alerts (by ``property``), in ms."""

    default_ms: int = ACK_DEADLINE_MS
    fire_ms: int = FIRE_ACK_DEADLINE_MS

    def of(self, alert_type: str) -> int:
        return self.fire_ms if alert_type.startswith("fire.") else self.default_ms


class AlertBook:
    """Open alerts by (device, type), and the changes people make to them."""

    def __init__(self, armed_from_ms: int = 0) -> None:
        self.open: dict[tuple[str, str], Alert] = {}
        self.by_id: dict[str, Alert] = {}
        # Escalation deadlines count from the later of the raise and this time: the backend's
        # start, for the alerts it loads (while it was down nothing was delivered and nobody
        # could acknowledge through it, so their deadlines are re-armed; issue 13).
        self.armed_from_ms = armed_from_ms

    def load(self, alert: Alert) -> None:
        self.open[(alert.device.id, alert.type)] = alert
        self.by_id[alert.id] = alert

    def is_open(self, device_id: str, alert_type: str) -> bool:
        return (device_id, alert_type) in self.open

    def get(self, alert_id: str) -> Alert:
        alert = self.by_id.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id, "no open alert with this id")
        return alert

    def raise_(self, dev: DeviceInfo, decision: Raise, now_ms: int) -> Change | None:
        """Raise an alert, or update the open one of the same (device, type)."""
        existing = self.open.get((dev.id, decision.alert_type))
        if existing is not None:
            if _RANK[decision.severity] > _RANK[existing.severity]:
                existing.severity = decision.severity
                existing.title = decision.title
                extra = audiences_for(decision.alert_type, decision.severity, dev)
                existing.audiences = list(dict.fromkeys([*existing.audiences, *extra]))
                existing.evidence = {**existing.evidence, **decision.evidence}
                existing.updated_at = now_ms
                return Change.of(existing, "updated", "rules")
            return self.update(existing, dict(decision.evidence), now_ms)
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

    def update(self, alert: Alert, evidence: dict[str, Any], now_ms: int) -> Change | None:
        merged = {**alert.evidence, **evidence}
        if merged == alert.evidence:
            return None
        alert.evidence = merged
        alert.updated_at = now_ms
        return Change.of(alert, "updated", "rules")

    def clear(self, dev: DeviceInfo, decision: Clear, now_ms: int) -> Change | None:
        """A rule's clear: resolves the open alert, except latching alarms (a person only)."""
        existing = self.open.get((dev.id, decision.alert_type))
        if existing is None or decision.alert_type in LATCHING:
            return None
        return self.resolve(existing, now_ms, by="rules", note=decision.reason)

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
    ) -> Change | None:
        """One audience acknowledges (each on its own); None if it had already."""
        if audience not in {a for a, _ in alert.audiences}:
            raise NotAnAudience(alert.id, str(audience))
        if any(a["audience"] == str(audience) for a in alert.acks):
            return None
        alert.acks.append(
            {"audience": str(audience), "by": by, "at": rfc3339(now_ms), "note": note}
        )
        if alert.state in (AlertState.RAISED, AlertState.ESCALATED):
            alert.state = AlertState.ACKNOWLEDGED
        alert.updated_at = now_ms
        return Change.of(alert, "acknowledged", by)

    def escalations(self, now_ms: int, deadlines: Deadlines) -> list[Change]:
        """Critical alerts not acknowledged by ``property`` within their deadline: escalated
        and sent to ``construction`` and ``community`` as well."""
        out = []
        for alert in list(self.open.values()):
            if (
                alert.severity is not Severity.CRITICAL
                or alert.evidence.get("escalated")
                or any(a["audience"] == str(Audience.PROPERTY) for a in alert.acks)
                or now_ms - max(alert.raised_at, self.armed_from_ms) < deadlines.of(alert.type)
            ):
                continue
            alert.state = AlertState.ESCALATED
            extra = escalation_audiences(alert.device)
            alert.audiences = list(dict.fromkeys([*alert.audiences, *extra]))
            alert.evidence = {
                **alert.evidence,
                "escalated": True,
                "ack_deadline_s": deadlines.of(alert.type) / 1000,
            }
            alert.updated_at = now_ms
            out.append(Change.of(alert, "escalated", "deadline"))
        return out
