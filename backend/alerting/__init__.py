"""The alerting core, pure: rules over per-device state, the engine, the alert lifecycle and
routing to audiences. Nothing here does I/O or knows of threads; the desk that stores and
delivers what changes, across the engine's one lock, is ``backend.desk``."""

from backend.alerting.engine import Engine, Shared
from backend.alerting.errors import AlertError, AlertNotFound, NotAnAudience
from backend.alerting.lifecycle import Alert, AlertBook, Change, Deadlines
from backend.alerting.routing import audiences_for

__all__ = [
    "Alert",
    "AlertBook",
    "AlertError",
    "AlertNotFound",
    "Change",
    "Deadlines",
    "Engine",
    "NotAnAudience",
    "Shared",
    "audiences_for",
]
