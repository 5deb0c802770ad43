"""``mqtt://[user:pass@]host:port`` and ``mqtts://`` addresses, parsed once for every client."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from anju.errors import ConfigError


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttUrl:
    """Parse an MQTT address; raise ConfigError saying what was expected."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an MQTT address; expected mqtt://host:port")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ConfigError(f"{url!r}: bad port") from exc
    return MqttUrl(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def mqtt_url_field(value: str) -> str:
    """A configuration field's MQTT address, checked: the value itself, or ValueError (what
    pydantic reports as the field's error) saying what was expected. The gateway's and the
    backend's settings use it, ``_url = field_validator("url")(mqtt_url_field)``."""
    try:
        parse_mqtt_url(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_password_transport(addr: MqttUrl, *, allow_plain: bool = False) -> None:
    """Refuse to send a password in clear over the network: a password over plain ``mqtt://``
    is allowed to a loopback host only, unless ``allow_plain`` says so explicitly."""
    if addr.password and not addr.tls and not allow_plain and not is_loopback(addr.host):
        raise ConfigError(
            f"{addr}: a password would cross the network in clear; use mqtts:// (with the "
            "city's CA), or allow plain TCP explicitly"
        )
