"""Errors of the alerting core; each carries what the caller needs to answer."""

from __future__ import annotations

from anju.errors import AnjuError


class AlertError(AnjuError):
    """An operation on an alert was refused."""

    def __init__(self, alert_id: str, message: str) -> None:
        super().__init__(f"alert {alert_id}: {message}")
        self.alert_id = alert_id


class AlertNotFound(AlertError):
    """No open alert with this id (unknown, or resolved already)."""


class NotAnAudience(AlertError):
    """The audience acknowledging is not one the alert was sent to."""

    def __init__(self, alert_id: str, audience: str) -> None:
        super().__init__(alert_id, f"{audience} is not an audience of this alert")
        self.audience = audience
