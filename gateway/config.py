"""The gateway's configuration file (YAML), typed; unknown keys are refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anju.contract import DEVICE_ID_RE
from anju.mqtturl import MqttUrl, mqtt_url_field, parse_mqtt_url
from anju.yamlfile import load_model
from gateway.adapters.config import Gbt26875Config, ModbusConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkConfig(_Strict):
    url: str = Field(description="mqtt://host:port or mqtts://host:port")
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=600)

    _url = field_validator("url")(mqtt_url_field)

    @model_validator(mode="after")
    def _pair(self) -> LinkConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def address(self) -> MqttUrl:
        return parse_mqtt_url(self.url)


class UplinkConfig(LinkConfig):
    compress: bool = Field(True, description="zlib-compress batches larger than 1 KiB")
    backoff_base_s: float = Field(1.0, gt=0, le=60)
    backoff_cap_s: float = Field(60.0, gt=0, le=3600)
    fast_backoff_cap_s: float = Field(
        4.0,
        gt=0,
        le=3600,
        description="reconnect delays stay under this for the first fast_backoff_for_s of an "
        "outage (decorrelated jitter), then grow to backoff_cap_s",
    )
    fast_backoff_for_s: float = Field(
        300.0, ge=0, le=86_400, description="how long an outage counts as short (0: never)"
    )
    connect_timeout_s: float = Field(15.0, gt=0, le=300)
    max_packet_bytes: int = Field(
        1024 * 1024,
        ge=64 * 1024,
        le=256 * 1024 * 1024,
        description="MQTT 5 Maximum Packet Size asked of the broker on CONNECT (acks, config)",
    )


class OutboxConfig(_Strict):
    path: Path
    resend_after_s: float = Field(10.0, gt=0, description="telemetry unconfirmed this long")
    events_resend_after_s: float = Field(
        2.0, gt=0, description="events (alarms) unconfirmed this long are sent again"
    )
    batch_max: int = Field(500, ge=1, le=10_000)
    window: int = Field(5_000, ge=1, description="telemetry sent but not yet confirmed, at most")
    events_window: int = Field(1_000, ge=1, description="events in flight, at most (own window)")
    replay_rate: float = Field(
        2_000, ge=0, description="telemetry readings sent per second at most; 0 = no limit"
    )
    max_bytes: int = Field(
        512 * 1024 * 1024, ge=1024 * 1024, description="disk budget of the SQLite file"
    )
    commit_max: int = Field(500, ge=1, le=10_000, description="LAN messages per commit, at most")
    queue_max: int = Field(
        5_000, ge=10, description="LAN messages waiting for a commit; when full, intake waits"
    )
    commit_linger_ms: float = Field(
        50.0, ge=0, le=1000, description="telemetry waits this long for company in a commit"
    )
    send_linger_ms: float = Field(
        100.0, ge=0, le=5000, description="telemetry waits this long for a fuller uplink batch"
    )
    batch_bytes_max: int = Field(
        1024 * 1024, ge=64 * 1024, description="uncompressed bytes per uplink batch, at most"
    )
    device_events_max: int = Field(
        2_000, ge=10, description="events (and statuses) held per device; beyond, its oldest go"
    )
    device_event_bytes_max: int | None = Field(
        None,
        ge=64 * 1024,
        description="bytes of events held per device; default: half of max_bytes / devices",
    )


class ClockConfig(_Strict):
    sync: Literal["kernel", "plausible", "assume"] = "plausible"
    not_before: dt.date = Field(
        dt.date(2025, 1, 1), description="a wall clock earlier than this is wrong"
    )
    hold_max_s: float = Field(
        600.0, gt=0, description="telemetry waits this long for the clock, then goes flagged"
    )

    def not_before_ms(self) -> int:
        day = dt.datetime.combine(self.not_before, dt.time(), tzinfo=dt.UTC)
        return int(day.timestamp() * 1000)


class RemoteConfigPolicy(_Strict):
    enabled: bool = True
    apply_timeout_s: float = Field(
        30.0, gt=0, le=600, description="a new configuration must reach the broker in this time"
    )


class SupervisionConfig(_Strict):
    stall_s: float = Field(
        20.0, gt=0, le=600, description="a part not progressing this long is unhealthy"
    )
    exit_after_s: float = Field(
        60.0, gt=0, le=3600, description="a part stalled this long stops the process (exit 2)"
    )
    max_errors: int = Field(
        5, ge=0, le=1000, description="exceptions a thread survives per minute, then exit"
    )


class GatewayConfig(_Strict):
    gateway_id: str
    lan: LinkConfig
    uplink: UplinkConfig
    outbox: OutboxConfig
    devices: list[str] = Field(description="ids of the devices behind this gateway")
    heartbeat_s: float = Field(30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="the gateway's loggers (anju.*); None: as the command line set"
    )
    metrics_port: int | None = Field(None, ge=0, le=65535)
    status_every_s: float = Field(2.0, gt=0, description="status file next to the outbox")
    clock: ClockConfig = ClockConfig.model_validate({})
    remote_config: RemoteConfigPolicy = RemoteConfigPolicy.model_validate({})
    supervision: SupervisionConfig = SupervisionConfig.model_validate({})
    config_version: int = Field(0, ge=0, description="set by remote configuration")
    # Southbound adapters (docs/adapters.md); absent: not started.
    gbt26875: Gbt26875Config | None = None
    modbus: ModbusConfig | None = None

    @field_validator("gateway_id")
    @classmethod
    def _gw(cls, v: str) -> str:
        if not DEVICE_ID_RE.match(v):
            raise ValueError("gateway id must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        return v

    def status_path(self) -> Path:
        return status_path_for(self.outbox.path)


def status_path_for(outbox: Path) -> Path:
    return outbox.with_name(outbox.name + ".status.json")


def load_gateway_config(path: Path) -> GatewayConfig:
    """The file's configuration; a relative register-map path is taken from the file's folder
    (not the working directory) and kept absolute from then on."""
    cfg = load_model(path, GatewayConfig)
    if cfg.modbus is None or not cfg.modbus.controllers:
        return cfg
    folder = path.parent.resolve()
    controllers = [
        c
        if c.map.startswith("builtin:") or Path(c.map).is_absolute()
        else c.model_copy(update={"map": str(folder / c.map)})
        for c in cfg.modbus.controllers
    ]
    modbus = cfg.modbus.model_copy(update={"controllers": controllers})
    return cfg.model_copy(update={"modbus": modbus})
