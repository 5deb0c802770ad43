"""Broker access control generated from the registry (DESIGN.md: "a subscriber sees only its
own audience and scope; a gateway can publish only as itself").

The backend's broker gets one user per gateway (its id), one per subscriber (``audience.scope``,
e.g. ``fire.330402``, ``property.org-greentown-jx``), the backend's workers, an operator (remote
configuration) and a read-only viewer of every alert; each community's LAN broker gets the
PROTOCOL.md section 1 rule ``pattern write anju/dev/%u/#``, its gateway and an installer. The
rules are data (:class:`Rule`), written out for Mosquitto (``acl_file``) and for EMQX
(``acl.conf``). Brokers must run with ``use_username_as_clientid true`` (EMQX:
``mqtt.use_username_as_clientid = true``): a user's client id is its user name, so nobody can
connect with another's client id and take over or wipe its session.

``anju provision`` (anju/provision/) writes these with hashed passwords and certificates;
``write_broker_files`` below is the older ``anju registry acl``, with clear-text passwords to
hash in place with ``mosquitto_passwd -U``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from anju.contract import Audience
from anju.registry import Registry

BACKEND_USER = "anju-backend"
EVENTS_SUFFIX = (
    "-events"  # the backend's alarm lane connects as "<worker>-events" (backend/mqtt.py)
)
OPERATOR_USER = "anju-operator"
ALERTS_VIEWER_USER = "anju-alerts"
_DEPARTMENTS = (
    Audience.FIRE,
    Audience.MARKET_SUPERVISION,
    Audience.PUBLIC_SECURITY,
    Audience.CONSTRUCTION,
)

Access = Literal["read", "write", "readwrite", "deny"]


@dataclass(frozen=True, slots=True)
class Rule:
    """``user`` (None: every user, with ``%u`` standing for the user's name) may ``access``
    ``topic``; ``deny`` refuses it both ways whatever else the user may (Mosquitto looks at
    denials first; the EMQX file lists them first)."""

    user: str | None
    access: Access
    topic: str


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    """ACL text for one broker and the users it names."""

    acl: str
    users: tuple[str, ...]


def subscriber_user(audience: str, scope: str) -> str:
    return f"{audience}.{scope}"


def installer_user(gateway_id: str) -> str:
    """The LAN identity that may publish as any device of this gateway (commissioning, tests)."""
    return f"installer.{gateway_id}"


def subscribers(reg: Registry) -> list[tuple[str, str]]:
    """Every (audience, scope) the registry can route alerts to."""
    out: list[tuple[str, str]] = []
    for d in reg.districts:
        out += [(str(a), d.code) for a in _DEPARTMENTS]
    for org in reg.organisations:
        out.append((org.kind, org.id))  # property or maintenance
    out += [(str(Audience.COMMUNITY), c.id) for c in reg.communities]
    return out


def gateway_ids(reg: Registry) -> list[str]:
    return [gw.id for com in reg.communities for gw in com.gateways]


AUDIT_HEAD = "anju/audit/head"  # backend/audit_anchor.py publishes it
REMOTE_CONFIG = "anju/gw/+/config"  # gateway/remote.py: the operator's only


def backend_rules(
    reg: Registry,
    *,
    backend_users: Sequence[str] = (BACKEND_USER,),
    operators: Sequence[str] = (),
    viewers: Sequence[str] = (),
) -> list[Rule]:
    """The backend broker's rules: workers everything under ``anju/``, an operator the gateways'
    remote configuration, viewers every alert, gateways their own ``anju/gw/<id>/`` topics,
    subscribers their own alert prefix; viewers and subscribers also the audit chain's head
    (``AUDIT_HEAD``, retained), to keep as witnesses. The gateways' remote configuration
    (``anju/gw/+/config``) is the operator's only: the workers are denied it, so that a
    compromised worker cannot reconfigure the gateways."""
    rules: list[Rule] = []
    for u in backend_users:
        rules += [Rule(u, "deny", REMOTE_CONFIG), Rule(u, "readwrite", "anju/#")]
    for u in operators:
        rules += [
            Rule(u, "readwrite", REMOTE_CONFIG),
            Rule(u, "read", "anju/gw/+/config/result"),
            Rule(u, "read", "anju/gw/+/state"),
        ]
    for u in viewers:
        rules += [Rule(u, "read", "anju/alerts/#"), Rule(u, "read", AUDIT_HEAD)]
    for g in gateway_ids(reg):
        rules += [
            Rule(g, "write", f"anju/gw/{g}/up"),
            Rule(g, "write", f"anju/gw/{g}/up/e"),
            Rule(g, "readwrite", f"anju/gw/{g}/state"),
            Rule(g, "read", f"anju/gw/{g}/ack"),
            Rule(g, "read", f"anju/gw/{g}/config"),
            Rule(g, "write", f"anju/gw/{g}/config/result"),
        ]
    for audience, scope in subscribers(reg):
        u = subscriber_user(audience, scope)
        rules += [Rule(u, "read", f"anju/alerts/{audience}/{scope}/#"), Rule(u, "read", AUDIT_HEAD)]
    return rules


def lan_rules(gateway_id: str, *, installers: Sequence[str] = ()) -> list[Rule]:
    """A community LAN broker: devices publish only under their own id; the gateway reads."""
    rules = [Rule(gateway_id, "read", "anju/dev/#")]
    rules += [Rule(u, "write", "anju/dev/#") for u in installers]
    rules.append(Rule(None, "write", "anju/dev/%u/#"))
    return rules


def mosquitto_acl(rules: Iterable[Rule], *, header: str) -> str:
    """Mosquitto ``acl_file`` text: ``user`` blocks, then ``pattern`` lines (which apply to
    every user)."""
    lines = [f"# {header}", "# Generated from the registry. Do not edit: regenerate."]
    patterns: list[str] = []
    current: str | None = None
    for r in rules:
        if r.user is None:
            patterns.append(f"pattern {r.access} {r.topic}")
            continue
        if r.user != current:
            lines += ["", f"user {r.user}"]
            current = r.user
        lines.append(f"topic {r.access} {r.topic}")
    if patterns:
        lines += ["", *patterns]
    return "\n".join(lines) + "\n"


_EMQX_ACTION = {"read": "subscribe", "write": "publish", "readwrite": "all"}


def _erl(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def emqx_acl(rules: Iterable[Rule], *, header: str) -> str:
    """EMQX 5 file authorisation (``acl.conf``, Erlang terms): the same rules, then deny
    everything else. ``%u`` becomes EMQX's ``${username}`` placeholder."""
    lines = [f"%% {header}", "%% Generated from the registry. Do not edit: regenerate."]
    for r in rules:
        who = "all" if r.user is None else f"{{username, {_erl(r.user)}}}"
        topic = r.topic.replace("%u", "${username}")
        if r.access == "deny":
            lines.append(f"{{deny, {who}, all, [{_erl(topic)}]}}.")
            continue
        lines.append(f"{{allow, {who}, {_EMQX_ACTION[r.access]}, [{_erl(topic)}]}}.")
    lines.append("{deny, all}.")
    return "\n".join(lines) + "\n"


def rule_users(rules: Iterable[Rule]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r.user for r in rules if r.user is not None))


def backend_broker_access(reg: Registry) -> BrokerAccess:
    rules = backend_rules(reg, operators=(OPERATOR_USER,))  # the only one who may push configs
    header = "The backend's broker (`anju registry acl`)."
    return BrokerAccess(mosquitto_acl(rules, header=header), rule_users(rules))


def lan_broker_access(gateway_id: str) -> BrokerAccess:
    rules = lan_rules(gateway_id)
    header = f"LAN broker of {gateway_id}: devices log in with their device id."
    return BrokerAccess(mosquitto_acl(rules, header=header), rule_users(rules))


def write_broker_files(reg: Registry, out: Path) -> list[Path]:
    """ACL files and clear-text password files (mode 0600) for every broker."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    brokers = {"backend": backend_broker_access(reg)}
    for com in reg.communities:
        for gw in com.gateways:
            access = lan_broker_access(gw.id)
            devices = tuple(d.id for d in com.devices if d.gateway == gw.id)
            brokers[f"lan-{gw.id}"] = BrokerAccess(access.acl, access.users + devices)
    for name, access in brokers.items():
        acl = out / f"{name}.acl"
        acl.write_text(access.acl, encoding="utf-8")
        pw = out / f"{name}.passwd"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for user in access.users:
                f.write(f"{user}:{secrets.token_urlsafe(18)}\n")
        written += [acl, pw]
    return written
