"""The alerting core: rules over per-device state, the alert lifecycle, routing to audiences."""

from backend.alerting.engine import Engine
from backend.alerting.lifecycle import Alert, AlertBook, Change
from backend.alerting.routing import audiences_for

__all__ = ["Alert", "AlertBook", "Change", "Engine", "audiences_for"]
