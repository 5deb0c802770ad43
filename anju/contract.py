"""The wire contract of PROTOCOL.md: identifiers, topics, audiences, limits.

Everything here is pure and small; the gateway, the backend, the simulators and the tests all
use these definitions so that the contract is written down exactly once.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

DEVICE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
METRIC_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
EVENT_TYPE_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
DISTRICT_RE: Final = re.compile(r"^[0-9]{6}$")

MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_STRING_LEN: Final = 64

# Section 1: devices -> gateway, on the community LAN broker.
DEV_PREFIX: Final = "anju/dev"
DEV_SUBSCRIPTIONS: Final = (
    f"{DEV_PREFIX}/+/telemetry",
    f"{DEV_PREFIX}/+/event",
    f"{DEV_PREFIX}/+/status",
)
DEV_CHANNELS: Final = frozenset({"telemetry", "event", "status"})


def device_topic(device_id: str, channel: str) -> str:
    """Topic a device publishes on: ``anju/dev/{device_id}/{channel}``."""
    return f"{DEV_PREFIX}/{device_id}/{channel}"


class Audience(StrEnum):
    """Who receives alerts (PROTOCOL.md section 2)."""

    FIRE = "fire"
    MARKET_SUPERVISION = "market_supervision"
    PUBLIC_SECURITY = "public_security"
    CONSTRUCTION = "construction"
    PROPERTY = "property"
    MAINTENANCE = "maintenance"
    COMMUNITY = "community"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"


class AlertState(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    RESOLVED = "resolved"


ALERT_PREFIX: Final = "anju/alerts"


def alert_topic(audience: str, scope: str, community_id: str, alert_type: str) -> str:
    """``anju/alerts/{audience}/{scope}/{community_id}/{alert_type}``."""
    return f"{ALERT_PREFIX}/{audience}/{scope}/{community_id}/{alert_type}"


def audience_filter(audience: str, scope: str) -> str:
    """The subscription a department or company uses: ``anju/alerts/{audience}/{scope}/#``."""
    return f"{ALERT_PREFIX}/{audience}/{scope}/#"


# Device kinds of ALERTS.md.
DEVICE_KINDS: Final = frozenset(
    {
        "elevator",
        "smoke_detector",
        "heat_detector",
        "manual_call_point",
        "fire_panel",
        "water_pressure",
        "electrical_fire",
        "fire_door",
        "camera",
        "access_controller",
        "emergency_button",
        "perimeter",
    }
)
FIRE_KINDS: Final = frozenset(
    {
        "smoke_detector",
        "heat_detector",
        "manual_call_point",
        "fire_panel",
        "water_pressure",
        "electrical_fire",
        "fire_door",
    }
)
ORGANISATION_KINDS: Final = frozenset({"property", "maintenance"})
