"""Who may resolve an alert, by type (issue 13): the audiences whose work the alert is. A token
with ``resolve: true`` resolves only the types whose resolvers include its audience (and only
alerts it sees); admin resolves every alert. The table, documented in docs/operations.md:

- fire alarms and other critical fire alerts: the fire brigade only; other fire alerts (faults,
  water pressure, doors, lanes, e-bike charging): the fire brigade or the property company;
- critical elevator alerts (trapped passengers, alarm button, overtravel, moving with the door
  open): market supervision (96333) or the maintenance company that frees the passengers; other
  elevator alerts: also the property company;
- critical security and access alerts (emergency button, duress): public security only; the
  others: public security or the property company;
- gateway and device health: the property company or the maintenance company.

A type the catalog does not know is resolved by admin only.
"""

from __future__ import annotations

from typing import Final

from anju.contract import Audience, Severity
from backend.alerting.catalog import SEVERITY

_F, _MS, _PS = Audience.FIRE, Audience.MARKET_SUPERVISION, Audience.PUBLIC_SECURITY
_PROP, _MAINT = Audience.PROPERTY, Audience.MAINTENANCE

# family -> (resolvers of its critical types, resolvers of the others)
_FAMILY: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "fire": (frozenset({_F}), frozenset({_F, _PROP})),
    "elevator": (frozenset({_MS, _MAINT}), frozenset({_MS, _MAINT, _PROP})),
    "security": (frozenset({_PS}), frozenset({_PS, _PROP})),
    "access": (frozenset({_PS}), frozenset({_PS, _PROP})),
    "gateway": (frozenset({_PROP, _MAINT}), frozenset({_PROP, _MAINT})),
    "device": (frozenset({_PROP, _MAINT}), frozenset({_PROP, _MAINT})),
}


def resolvers(alert_type: str) -> frozenset[str]:
    """The audiences that may resolve an alert of ``alert_type`` (admin always may)."""
    severity = SEVERITY.get(alert_type)
    family = _FAMILY.get(alert_type.split(".", 1)[0])
    if severity is None or family is None:
        return frozenset()
    critical, other = family
    return critical if severity == Severity.CRITICAL else other


def may_resolve(alert_type: str, audience: str) -> bool:
    return audience == "admin" or audience in resolvers(alert_type)
