"""Configuration of the southbound adapters (sections ``gbt26875`` and ``modbus`` of the
gateway's file); unknown keys are refused, like the rest of the file."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from anju.contract import DEVICE_ID_RE, METRIC_RE

Hex12 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{12}$")]
DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_RE.pattern)]
Metric = Annotated[str, StringConstraints(pattern=METRIC_RE.pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PanelComponent(_Strict):
    system_addr: int = Field(ge=0, le=255)
    component_addr: int = Field(ge=0, le=0xFFFFFFFF)
    device: DeviceId | None = Field(None, description="registry device of its analog values")
    building: str | None = None
    location: str | None = None


class AnalogOverride(_Strict):
    metric: Metric
    scale: float = Field(description="metric value = raw value x scale")


class Uitd(_Strict):
    source_address: Hex12 = Field(description="the 6 address bytes in frame order, as hex")
    device: DeviceId = Field(description="its fire_panel device in the registry")
    components: list[PanelComponent] = Field(default_factory=list)


class Gbt26875Config(_Strict):
    host: str = Field("0.0.0.0", description="address the UITD server listens on")
    port: int = Field(9026, ge=0, le=65535, description="0: any free port (tests)")
    centre_address: Hex12 = Field("000000000000", description="source address of replies")
    utc_offset_min: int = Field(480, ge=-720, le=840, description="time zone of the UITDs")
    uitds: list[Uitd] = Field(default_factory=list)
    accept_unknown: bool = Field(False, description="store frames of unknown UITDs? (no)")
    time_sync_s: float = Field(3600.0, gt=0, description="time sync to each UITD this often")
    idle_timeout_s: float = Field(300.0, gt=0, description="close a connection silent this long")
    partial_timeout_s: float = Field(5.0, gt=0, description="a half frame waits this long")
    max_connections: int = Field(64, ge=1, le=4096)
    window: int = Field(64, ge=1, le=4096, description="frames per connection awaiting commit")
    commit_max: int = Field(500, ge=1, le=10_000, description="frames per outbox commit")
    analog: dict[int, AnalogOverride] = Field(
        default_factory=dict, description="analog type code -> metric and scale (site variants)"
    )

    @model_validator(mode="after")
    def _unique(self) -> Gbt26875Config:
        seen: set[str] = set()
        for u in self.uitds:
            a = u.source_address.lower()
            if a in seen:
                raise ValueError(f"source_address {a} is listed twice")
            seen.add(a)
        return self


class ModbusController(_Strict):
    device: DeviceId = Field(description="its elevator device in the registry")
    host: str
    port: int = Field(502, ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255, description="Modbus unit (device) id")
    map: str = Field(description="register map: a YAML path, or builtin:NAME")
    poll_s: float = Field(1.0, gt=0, le=3600)
    report_s: float = Field(60.0, gt=0, description="unchanged values are sent this often")
    timeout_s: float = Field(1.0, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="poll back-off cap")
    offline_after: int = Field(3, ge=1, description="failed polls before it counts as down")


class ModbusConfig(_Strict):
    controllers: list[ModbusController] = Field(default_factory=list)
