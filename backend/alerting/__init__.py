"""The alerting core: rules over per-device state (pure), the alert lifecycle, routing to
audiences, and the desk that stores and delivers what changes."""

from backend.alerting.desk import AlertDesk
from backend.alerting.engine import Engine, Shared
from backend.alerting.errors import AlertError, AlertNotFound, NotAnAudience
from backend.alerting.lifecycle import Alert, AlertBook, Change, Deadlines
from backend.alerting.routing import audiences_for

__all__ = [
    "Alert",
    "AlertBook",
    "AlertDesk",
    "AlertError",
    "AlertNotFound",
    "Change",
    "Deadlines",
    "Engine",
    "NotAnAudience",
    "Shared",
    "audiences_for",
]
