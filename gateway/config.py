"""The gateway's configuration file (YAML), typed; unknown keys are refused."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anju.contract import DEVICE_ID_RE
from anju.errors import ConfigError
from anju.mqtturl import MqttUrl, parse_mqtt_url
from anju.yamlfile import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkConfig(_Strict):
    url: str = Field(description="mqtt://host:port or mqtts://host:port")
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parse_mqtt_url(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    def address(self) -> MqttUrl:
        return parse_mqtt_url(self.url)


class OutboxConfig(_Strict):
    path: Path
    resend_after_s: float = Field(10.0, gt=0)
    batch_max: int = Field(500, ge=1, le=10_000)
    window: int = Field(5_000, ge=1, description="records sent but not yet confirmed, at most")


class GatewayConfig(_Strict):
    gateway_id: str
    lan: LinkConfig
    uplink: LinkConfig
    outbox: OutboxConfig
    devices: list[str] = Field(description="ids of the devices behind this gateway")
    heartbeat_s: float = Field(30.0, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)

    @field_validator("gateway_id")
    @classmethod
    def _gw(cls, v: str) -> str:
        if not DEVICE_ID_RE.match(v):
            raise ValueError("gateway id must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
        return v


def load_gateway_config(path: Path) -> GatewayConfig:
    return load_model(path, GatewayConfig)
