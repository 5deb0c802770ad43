"""Who receives an alert: the audiences of ALERTS.md, with scopes taken from the registry.

Departments are scoped by the community's district, the property company and the elevator's
maintenance company by their organisation id, the residents' committee by the community id.
Every alert goes to exactly these audiences and to nobody else.
"""

from __future__ import annotations

from typing import Final

from anju.contract import FIRE_KINDS, Audience, Severity
from anju.registry import DeviceInfo

# Departments per alert family (the part of the type before the dot).
_FAMILY_DEPARTMENTS: Final = {
    "elevator": (Audience.MARKET_SUPERVISION,),
    "fire": (Audience.FIRE,),
    "security": (Audience.PUBLIC_SECURITY,),
    "access": (Audience.PUBLIC_SECURITY,),
}
# Exceptions written in the catalog.
_EXTRA: Final = {
    "elevator.ebike": (Audience.FIRE,),
    "fire.lane_blocked": (Audience.PUBLIC_SECURITY,),
}
_PROPERTY_ONLY: Final = frozenset({"access.door_held_open", "access.tailgating"})
_HEALTH_FAMILIES: Final = frozenset({"device", "gateway"})


def audiences_for(
    alert_type: str, severity: Severity, dev: DeviceInfo
) -> list[tuple[Audience, str]]:
    """(audience, scope) pairs for an alert of ``alert_type`` raised on ``dev``."""
    out: list[tuple[Audience, str]] = []
    family = alert_type.split(".", 1)[0]
    if family in _HEALTH_FAMILIES:
        # Device health: property, + fire for fire kinds, + maintenance for elevators.
        if dev.kind in FIRE_KINDS:
            out.append((Audience.FIRE, dev.district))
        if dev.kind == "elevator" and dev.maintenance_org:
            out.append((Audience.MAINTENANCE, dev.maintenance_org))
    elif alert_type not in _PROPERTY_ONLY:
        for aud in (*_FAMILY_DEPARTMENTS.get(family, ()), *_EXTRA.get(alert_type, ())):
            out.append((aud, dev.district))
        if family == "elevator" and dev.maintenance_org:
            out.append((Audience.MAINTENANCE, dev.maintenance_org))
    out.append((Audience.PROPERTY, dev.property_org))
    if severity is Severity.CRITICAL and alert_type not in _PROPERTY_ONLY:
        out.append((Audience.COMMUNITY, dev.community_id))
    return list(dict.fromkeys(out))


def escalation_audiences(dev: DeviceInfo) -> list[tuple[Audience, str]]:
    """Added when an acknowledgement deadline passes: the construction bureau of the district
    (supervisor of property companies) and the residents' committee."""
    return [(Audience.CONSTRUCTION, dev.district), (Audience.COMMUNITY, dev.community_id)]
