"""The backend's settings: environment (``ANJU_*``) or command-line flags, typed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from anju.contract import DEVICE_KINDS
from anju.errors import ConfigError
from anju.mqtturl import check_password_transport, mqtt_url_field, parse_mqtt_url
from anju.yamlfile import load_model

# Guarantees the chaos harness breaks on purpose (``ANJU_BREAK``; issue 16, docs/guarantees.md
# "Breaking a guarantee on purpose"). Test only: never set in production.
Breakable = Literal["ack_before_commit", "skip_dedupe", "no_event_priority"]
BREAKABLE: tuple[str, ...] = get_args(Breakable)


class BackendSettings(BaseSettings):
    # populate_by_name: ``break_guarantees=`` in code, ``ANJU_BREAK`` alone from the
    # environment (an alias would also read the unprefixed ``BREAK_GUARANTEES``).
    model_config = SettingsConfigDict(
        env_prefix="ANJU_", extra="forbid", frozen=True, populate_by_name=True
    )

    database_url: str = Field(description="postgresql://user@host:port/db")
    mqtt_url: str = Field(description="the backend's broker: gateways' uplink and alert topics")
    # TLS for mqtts:// (backend/mqtt.py); the alarm lane logs in as "<user>-events".
    mqtt_ca_file: Path | None = Field(default=None, description="CA of the broker (mqtts)")
    mqtt_cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    mqtt_key_file: Path | None = None
    mqtt_allow_plain_password: bool = Field(
        default=False, description="allow a password over plain mqtt:// to a non-loopback host"
    )
    registry: Path
    client_id: str = "anju-backend"
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_token: str | None = Field(default=None, description="bearer token the API requires, if set")
    # TLS for the API (uvicorn); or a reverse proxy in front (docs/operations.md).
    api_ssl_certfile: Path | None = Field(default=None, description="the API's TLS certificate")
    api_ssl_keyfile: Path | None = Field(default=None, description="the API's TLS key")
    timezone: str = Field(
        default="Asia/Shanghai", description="the deployment's time zone: times people read"
    )
    queue_max: int = Field(
        default=2_000, ge=1, description="decoded batches waiting for the writer"
    )
    batch_max_records: int = Field(default=5_000, ge=1)
    batch_wait_ms: int = Field(default=20, ge=0)
    mqtt_incoming_max: int = Field(
        default=10_000,
        ge=100,
        description="uplink messages aiomqtt may hold before the ingest takes them",
    )
    tick_ms: int = Field(default=250, ge=10)
    storage: Literal["auto", "timescale", "plain"] = Field(
        default="auto",
        description="storage mode chosen when the database is first migrated (kept after):"
        " timescale, plain, or auto (TimescaleDB when this role can have it)",
    )
    alerting: Path | None = Field(
        default=None, description="alerting.yaml: parameter defaults, deadlines, tokens, webhooks"
    )
    audit_anchor_file: Path | None = Field(
        default=None,
        description="append-only file the audit chain's head (n, hash, time) is appended to"
        " every 10 s (backend/audit_anchor.py); also published retained on anju/audit/head",
    )
    worker_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="several workers (docs/scaling.md): the one holding the group's advisory"
        " lock runs, the others (same client_id) stand by; unset: one worker, as before",
    )
    shared: bool = Field(
        default=False,
        description="several ACTIVE workers in worker_group (docs/scaling.md): each receives"
        " through the broker's shared subscription and evaluates the communities of the"
        " partitions it holds; each needs its own client_id. Off: one leads, the others stand by",
    )
    partitions: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="with shared: the communities are hashed into this many partitions (the"
        " same on every worker of the group)",
    )
    state_snapshot_ms: int = Field(
        default=30_000,
        ge=50,
        description="rule state of every device that reported written this often (states"
        " whose timers or open alerts changed: at once, before the gateway is acknowledged)",
    )
    break_guarantees: Annotated[frozenset[Breakable], NoDecode] = Field(
        default=frozenset(),
        validation_alias="ANJU_BREAK",
        description="TEST ONLY (ANJU_BREAK, comma-separated): guarantees broken on purpose for"
        " the chaos harness: ack_before_commit, skip_dedupe, no_event_priority",
    )

    _mqtt = field_validator("mqtt_url")(mqtt_url_field)

    @model_validator(mode="after")
    def _mqtt_tls(self) -> BackendSettings:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("mqtt_cert_file and mqtt_key_file go together")
        if (self.api_ssl_certfile is None) != (self.api_ssl_keyfile is None):
            raise ValueError("api_ssl_certfile and api_ssl_keyfile go together")
        try:
            check_password_transport(
                parse_mqtt_url(self.mqtt_url), allow_plain=self.mqtt_allow_plain_password
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _shared_needs_group(self) -> BackendSettings:
        if self.shared and self.worker_group is None:
            raise ValueError("shared (several active workers) needs worker_group")
        return self

    @field_validator("break_guarantees", mode="before")
    @classmethod
    def _break(cls, v: Any) -> frozenset[str]:
        names = [n.strip() for n in v.split(",")] if isinstance(v, str) else list(v)
        names = [n for n in names if n]
        unknown = sorted(set(names) - set(BREAKABLE))
        if unknown:
            raise ValueError(
                f"ANJU_BREAK: unknown guarantee(s) {', '.join(unknown)}; expected a"
                f" comma-separated list of {', '.join(BREAKABLE)}"
            )
        return frozenset(names)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        from anju.localtime import zone

        try:
            zone(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected postgresql://user@host:port/database")
        return v


# ---- the alerting configuration file (ANJU_ALERTING=path/to/alerting.yaml) -----------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenSpec(_Strict):
    """An API token: who holds it, which audience and scope it sees, what it may do. Give the
    token's SHA-256 (``sha256``, hex) rather than the token itself (``token``, development)."""

    name: str
    audience: Literal[
        "admin",
        "fire",
        "market_supervision",
        "public_security",
        "construction",
        "property",
        "maintenance",
        "community",
    ]
    scope: str | None = None  # district code, organisation id or community id; none for admin
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    token: str | None = None
    resolve: bool = False  # may resolve alerts (admin always may)

    @model_validator(mode="after")
    def _check(self) -> TokenSpec:
        if (self.sha256 is None) == (self.token is None):
            raise ValueError("give exactly one of sha256 or token")
        if (self.audience == "admin") != (self.scope is None):
            raise ValueError("admin tokens have no scope; every other token needs one")
        return self

    def digest(self) -> str:
        return self.sha256 or hashlib.sha256((self.token or "").encode()).hexdigest()


class WebhookSpec(_Strict):
    """A department's or company's system that receives its alerts by HTTP POST."""

    name: str
    audience: str
    scope: str
    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=16, description="HMAC-SHA256 key")
    max_attempts: int = Field(default=6, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)


class AlertingConfig(_Strict):
    """Deployment-wide alerting settings; every default is the catalog's (docs/alerts.md)."""

    params: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description='parameter defaults by device kind ("*": every kind); registry params win',
    )
    ack_deadline_s: float = Field(default=300, gt=0)
    fire_ack_deadline_s: float = Field(default=180, gt=0)
    flap_cycles: int = Field(default=5, ge=1)
    flap_window_s: float = Field(default=600, gt=0)
    storm_count: int = Field(default=20, ge=1)
    storm_window_s: float = Field(default=60, gt=0)
    gateway_silent_s: float = Field(default=90, gt=0)
    tokens: list[TokenSpec] = Field(default_factory=list)
    webhooks: list[WebhookSpec] = Field(default_factory=list)

    @field_validator("params")
    @classmethod
    def _kinds(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        unknown = sorted(set(v) - DEVICE_KINDS - {"*"})
        if unknown:
            raise ValueError(f"unknown device kind(s) {unknown}; expected one of "
                             f"{sorted(DEVICE_KINDS)} or \"*\"")  # fmt: skip
        return v


def load_alerting(path: Path | None) -> AlertingConfig:
    """The alerting file, or the defaults when there is none; errors name file and line."""
    return AlertingConfig() if path is None else load_model(path, AlertingConfig)


# ---- failing closed (issue 13) ---------------------------------------------------------------

MIN_SECRET_LEN = 20
# SHA-256 digests of the tokens published in deploy/alerting.example.yaml and the docs.
EXAMPLE_TOKEN_DIGESTS = frozenset(
    {
        "ce82b189198d38e3944a70e9d0bfcec751c98e6ed0212ab978c70ec46354fc09",
        "c6293e2481468b3a0e7ff29e66316417fc7527a51f820708eb8c9ec579d49935",
        "e327fa197221ec8e497a40e4735de26985c0919458534f04f8d606825daca13e",
        "1a11d2911af588c66b5b8c9345777cb1d8adf408d4c0bde4075a49ce4bdb5cbb",
    }
)
EXAMPLE_SECRETS = frozenset({"another-long-random-secret-here"})


def _example(secret: str) -> bool:
    low = secret.lower()
    return low.startswith(("change-me", "changeme", "example-")) or low in EXAMPLE_SECRETS


def check_api_access(settings: BackendSettings, alerting: AlertingConfig) -> None:
    """Refuse to serve an API that would fail open, or whose secrets are published ones.

    Without any token (``ANJU_API_TOKEN`` or ``tokens:`` in the ``ANJU_ALERTING`` file) every
    caller is admin: allowed only when ``ANJU_API_HOST`` is a loopback address (development).
    Example tokens and webhook secrets (``change-me-*``, ``example-*``, the digests of
    deploy/alerting.example.yaml) and secrets shorter than ``MIN_SECRET_LEN`` are refused."""
    from anju.mqtturl import is_loopback

    problems: list[str] = []
    if settings.api_token is not None and (
        _example(settings.api_token) or len(settings.api_token) < MIN_SECRET_LEN
    ):
        problems.append(f"ANJU_API_TOKEN is an example or shorter than {MIN_SECRET_LEN} characters")
    for t in alerting.tokens:
        if t.token is not None and (_example(t.token) or len(t.token) < MIN_SECRET_LEN):
            problems.append(
                f"token {t.name!r}: an example or shorter than {MIN_SECRET_LEN} characters"
            )
        if t.digest() in EXAMPLE_TOKEN_DIGESTS:
            problems.append(f"token {t.name!r}: the published example's sha256; make your own")
    for w in alerting.webhooks:
        if _example(w.secret) or len(w.secret) < MIN_SECRET_LEN:
            problems.append(
                f"webhook {w.name!r}: its secret is an example or shorter than "
                f"{MIN_SECRET_LEN} characters"
            )
    if problems:
        raise ConfigError(
            "refusing to start the API with published or weak secrets (ANJU_ALERTING "
            f"{settings.alerting}): " + "; ".join(problems) + " (`anju provision` makes tokens)"
        )
    if not alerting.tokens and settings.api_token is None and not is_loopback(settings.api_host):
        raise ConfigError(
            f"the API would listen on {settings.api_host} with no token: every caller would be "
            "admin. Give tokens (`tokens:` in the ANJU_ALERTING file, from `anju provision`, or "
            "ANJU_API_TOKEN), or bind ANJU_API_HOST to 127.0.0.1 for development"
        )
