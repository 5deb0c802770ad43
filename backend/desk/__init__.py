"""The one boundary between the pure alerting core (``backend.alerting``) and I/O: the
engine's lock, shared by the main loop and the alarm lane's thread (``desk``), the typed
hand-over between them (``inbox``), the keeper that stores and delivers every alert change
(``keeper``), the writer of rule state (``states``), and the feed from the telemetry lane's
commits to the rules (``feed``)."""

from backend.desk.desk import AlertDesk, Saved
from backend.desk.feed import RuleFeed
from backend.desk.inbox import waited
from backend.desk.keeper import Keeper
from backend.desk.states import StateWriter

__all__ = ["AlertDesk", "Keeper", "RuleFeed", "Saved", "StateWriter", "waited"]
