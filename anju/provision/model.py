"""What ``provision`` hands back: every identity with its credentials and files, for the demo,
the tests and the command line (which prints no secret unless asked)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

Role = Literal[
    "backend",  # a backend worker's main session
    "backend-events",  # the same worker's alarm lane ("<worker>-events")
    "operator",  # remote configuration of the gateways
    "viewer",  # reads every alert (an operator's screen)
    "gateway",  # a gateway on the backend broker (uplink) or on its LAN broker
    "subscriber",  # a department, company or residents' committee
    "installer",  # LAN: may publish as any device of its gateway
    "device",  # LAN: publishes only under anju/dev/<its id>/
]


@dataclass(frozen=True, slots=True)
class Identity:
    """A broker user. ``broker`` is ``"backend"`` or ``"lan/<gateway id>"``; ``key`` their
    join, the name used in ``secrets.json``."""

    broker: str
    username: str
    role: Role
    password: str = field(repr=False)
    audience: str | None = None
    scope: str | None = None
    cert_file: Path | None = None  # client certificate (mutual TLS), when it has one
    key_file: Path | None = None

    @property
    def key(self) -> str:
        return f"{self.broker}/{self.username}"

    def url(self, host: str, port: int, *, tls: bool = True) -> str:
        """``mqtts://user:password@host:port`` (user and password percent-encoded)."""
        scheme = "mqtts" if tls else "mqtt"
        user, pw = quote(self.username, safe=""), quote(self.password, safe="")
        return f"{scheme}://{user}:{pw}@{host}:{port}"


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    audience: str  # "admin" or a PROTOCOL.md audience
    scope: str | None
    token: str = field(repr=False)
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Everything one broker reads, in one folder (``OUT/backend/`` or ``OUT/lan/<gw>/``)."""

    name: str  # "backend" or "lan/<gateway id>"
    dir: Path
    password_file: Path
    acl_file: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path  # revoked client certificates (read with require_certificate)
    hosts: tuple[str, ...]  # the names in the server certificate


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    out_dir: Path
    ca_file: Path
    secrets_file: Path
    tokens_file: Path  # hashed API tokens, the `tokens:` list of an alerting.yaml
    backend: BrokerFiles
    lan: dict[str, BrokerFiles]  # by gateway id
    identities: dict[str, Identity]  # by key ("backend/fire.330402", "lan/gw-1/dev-1")
    tokens: dict[str, ApiToken]  # by name ("admin", "fire.330402", ...)
    created: tuple[str, ...] = ()  # identity keys and token names made on this run
    rotated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()  # no longer in the registry: gone from every file
    certificates_issued: tuple[Path, ...] = ()

    def identity(self, broker: str, username: str) -> Identity:
        return self.identities[f"{broker}/{username}"]

    def of_role(self, role: Role, broker: str | None = None) -> list[Identity]:
        return [
            i
            for i in self.identities.values()
            if i.role == role and (broker is None or i.broker == broker)
        ]

    def subscriber(self, audience: str, scope: str) -> Identity:
        return self.identities[f"backend/{audience}.{scope}"]

    def subscribers(self) -> dict[str, Identity]:
        """Every subscriber keyed ``"{audience}/{scope}"`` (e.g. ``"fire/330402"``)."""
        return {f"{i.audience}/{i.scope}": i for i in self.of_role("subscriber")}
