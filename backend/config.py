"""The backend's settings: environment (``ANJU_*``) or command-line flags, typed."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from anju.errors import ConfigError
from anju.mqtturl import parse_mqtt_url


class BackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANJU_", extra="forbid", frozen=True)

    database_url: str = Field(description="postgresql://user@host:port/db")
    mqtt_url: str = Field(description="the backend's broker: gateways' uplink and alert topics")
    registry: Path
    client_id: str = "anju-backend"
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    api_token: str | None = Field(None, description="bearer token the API requires, if set")
    queue_max: int = Field(2_000, ge=1, description="decoded batches waiting for the writer")
    batch_max_records: int = Field(5_000, ge=1)
    batch_wait_ms: int = Field(20, ge=0)
    tick_ms: int = Field(250, ge=10)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt(cls, v: str) -> str:
        try:
            parse_mqtt_url(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected postgresql://user@host:port/database")
        return v
