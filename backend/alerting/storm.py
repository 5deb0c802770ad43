"""Storm summaries: more than ``count`` alerts of one type in one community within ``window``
are summarised into one alert that lists them (ALERTS.md).

The summary is an alert of the same type on the community itself (``device_kind:
"community"``, ``device_id`` = the community id), so subscribers filtering by type still see
it. While it is open, new alerts of that type in that community are folded into it instead of
being raised one by one; it resolves itself when every folded alert has cleared, or a person
resolves it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from anju.contract import Severity
from anju.registry import CityIndex, DeviceInfo
from backend.alerting.lifecycle import Alert, AlertBook, Change
from backend.alerting.model import Clear, Raise

_LIST_MAX = 500  # devices listed in a summary's evidence (the count is always exact)


def pseudo_device(city: CityIndex, kind: str, ident: str) -> DeviceInfo:
    """A community or a gateway as the subject of an alert (storm summary, gateway.offline)."""
    com_id = ident if kind == "community" else city.gateway_community[ident]
    com = city.communities[com_id]
    return DeviceInfo(
        id=ident,
        kind=kind,
        gateway_id=ident if kind == "gateway" else "",
        community_id=com.id,
        community_name=com.name,
        district=com.district,
        property_org=com.property,
        building=None,
        location=None,
        maintenance_org=None,
        params={},
    )


class Storms:
    def __init__(self, count: int, window_ms: int) -> None:
        self.count = count
        self.window_ms = window_ms
        self.recent: dict[tuple[str, str], deque[tuple[int, str]]] = {}
        self.members: dict[tuple[str, str], set[str]] = {}  # folded devices still active

    def fold(
        self, city: CityIndex, book: AlertBook, dev: DeviceInfo, d: Raise, now_ms: int
    ) -> list[Change] | None:
        """None to raise the alert as usual; else the summary's change (it was folded)."""
        key = (dev.community_id, d.alert_type)
        recent = self.recent.setdefault(key, deque())
        while recent and now_ms - recent[0][0] >= self.window_ms:
            recent.popleft()
        summary = book.open.get((dev.community_id, d.alert_type))
        if summary is None and len(recent) < self.count:
            recent.append((now_ms, dev.id))
            return None
        recent.append((now_ms, dev.id))
        members = self.members.setdefault(key, set())
        members.add(dev.id)
        listed = list(dict.fromkeys([*(x for _, x in recent), *members]))
        if summary is not None:
            seen = summary.evidence.get("devices", [])
            devices = list(dict.fromkeys([*seen, dev.id]))
            ev: dict[str, Any] = {
                "count": int(summary.evidence.get("count", 0)) + 1,
                "devices": devices[:_LIST_MAX],
                "open_devices": sorted(members)[:_LIST_MAX],
            }
            ch = book.update(summary, ev, now_ms)
            return [ch] if ch else []
        pseudo = pseudo_device(city, "community", dev.community_id)
        sev = d.severity
        title = f"告警风暴 Storm: {len(listed)} × {d.alert_type}"
        ev = {
            "summary": True,
            "count": len(listed),
            "window_s": self.window_ms / 1000,
            "devices": listed[:_LIST_MAX],
            "open_devices": sorted(members),
        }
        ch = book.raise_(
            pseudo, Raise(d.alert_type, Severity(sev), title, d.occurred_at, ev), now_ms
        )
        return [ch] if ch else []

    def member_cleared(
        self, book: AlertBook, dev: DeviceInfo, alert_type: str, now_ms: int
    ) -> list[Change]:
        key = (dev.community_id, alert_type)
        members = self.members.get(key)
        if not members or dev.id not in members:
            return []
        members.discard(dev.id)
        summary = book.open.get(key)
        if summary is None:
            return []
        if not members:
            pseudo = summary.device
            ch = book.clear(pseudo, Clear(alert_type, "every summarised alert cleared"), now_ms)
            return [ch] if ch else []
        ch = book.update(summary, {"open_devices": sorted(members)}, now_ms)
        return [ch] if ch else []

    def restore(self, summary: Alert) -> None:
        key = (summary.device.id, summary.type)
        self.members[key] = set(summary.evidence.get("open_devices", []))

    def forget(self, summary: Alert) -> set[str]:
        """A person resolved the summary: its members are released."""
        return self.members.pop((summary.device.id, summary.type), set())
