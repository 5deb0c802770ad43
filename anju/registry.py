"""The registry of a city (PROTOCOL.md section 3): districts, organisations, communities,
gateways and devices. The backend loads it; gateways and simulators are configured from it.

A registry that names an unknown district, organisation, gateway or device kind, or repeats an
id, is rejected with a message that names the file and the line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from anju.contract import DEVICE_ID_RE, DEVICE_KINDS, ORGANISATION_KINDS
from anju.errors import RegistryError
from anju.yamlfile import _node_at, line_of, read_yaml, validation_message

Id = Annotated[str, StringConstraints(pattern=DEVICE_ID_RE.pattern)]
DistrictCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
Scalar = str | int | float | bool
_HEX12 = re.compile(r"^[0-9a-fA-F]{12}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class District(_Strict):
    code: DistrictCode
    name: str


class Organisation(_Strict):
    id: Id
    kind: str
    name: str


class Gateway(_Strict):
    id: Id


class Device(_Strict):
    id: Id
    kind: str
    gateway: Id
    building: str | None = None
    location: str | None = None
    maintenance: Id | None = None
    params: dict[str, Scalar] = Field(default_factory=dict)


class Community(_Strict):
    id: Id
    name: str
    district: DistrictCode
    street: str | None = None
    property: Id
    committee: str | None = None
    gateways: list[Gateway]
    devices: list[Device] = Field(default_factory=list)


class Registry(_Strict):
    districts: list[District]
    organisations: list[Organisation] = Field(default_factory=list)
    communities: list[Community]

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Cross-reference problems as (location, message); empty when the registry is sound."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        districts = {d.code for d in self.districts}
        orgs: dict[str, str] = {}
        for i, org in enumerate(self.organisations):
            if org.kind not in ORGANISATION_KINDS:
                out.append(
                    (
                        ("organisations", i, "kind"),
                        f"unknown organisation kind {org.kind!r}; expected one of "
                        f"{sorted(ORGANISATION_KINDS)}",
                    )
                )
            if org.id in orgs:
                out.append((("organisations", i, "id"), f"organisation {org.id!r} is listed twice"))
            orgs[org.id] = org.kind
        seen_communities: set[str] = set()
        seen_gateways: set[str] = set()
        seen_devices: set[str] = set()
        seen_uitds: set[str] = set()
        for c, com in enumerate(self.communities):
            at: tuple[str | int, ...] = ("communities", c)
            if com.id in seen_communities:
                out.append(((*at, "id"), f"community {com.id!r} is listed twice"))
            seen_communities.add(com.id)
            if com.district not in districts:
                out.append(((*at, "district"), f"unknown district {com.district!r}"))
            if orgs.get(com.property) != "property":
                out.append(((*at, "property"), f"unknown property organisation {com.property!r}"))
            own_gateways = set()
            for g, gw in enumerate(com.gateways):
                if gw.id in seen_gateways:
                    out.append(((*at, "gateways", g, "id"), f"gateway {gw.id!r} is listed twice"))
                seen_gateways.add(gw.id)
                own_gateways.add(gw.id)
            for d, dev in enumerate(com.devices):
                dat = (*at, "devices", d)
                if dev.id in seen_devices:
                    out.append(((*dat, "id"), f"device {dev.id!r} is listed twice"))
                seen_devices.add(dev.id)
                if dev.kind not in DEVICE_KINDS:
                    out.append(((*dat, "kind"), f"unknown device kind {dev.kind!r}"))
                if dev.gateway not in own_gateways:
                    out.append(
                        (
                            (*dat, "gateway"),
                            f"unknown gateway {dev.gateway!r} (not a gateway of {com.id})",
                        )
                    )
                src = dev.params.get("source_address")  # GB/T 26875.3 UITD (docs/adapters.md)
                if src is not None:
                    if dev.kind != "fire_panel" or not _HEX12.match(str(src)):
                        out.append(
                            (
                                (*dat, "params", "source_address"),
                                "source_address is 12 hex digits, on a fire_panel",
                            )
                        )
                    elif str(src).lower() in seen_uitds:
                        out.append(((*dat, "params", "source_address"), f"{src} is used twice"))
                    seen_uitds.add(str(src).lower())
                if dev.maintenance is not None and orgs.get(dev.maintenance) != "maintenance":
                    out.append(
                        (
                            (*dat, "maintenance"),
                            f"unknown maintenance organisation {dev.maintenance!r}",
                        )
                    )
        return out


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device with everything routing and rules need, flattened."""

    id: str
    kind: str
    gateway_id: str
    community_id: str
    community_name: str
    district: str
    property_org: str
    building: str | None
    location: str | None
    maintenance_org: str | None
    params: dict[str, Scalar]


class CityIndex:
    """Look-ups over a validated registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.devices: dict[str, DeviceInfo] = {}
        self.communities: dict[str, Community] = {c.id: c for c in registry.communities}
        self.gateway_community: dict[str, str] = {}
        self.district_names = {d.code: d.name for d in registry.districts}
        for com in registry.communities:
            for gw in com.gateways:
                self.gateway_community[gw.id] = com.id
            for dev in com.devices:
                self.devices[dev.id] = DeviceInfo(
                    id=dev.id,
                    kind=dev.kind,
                    gateway_id=dev.gateway,
                    community_id=com.id,
                    community_name=com.name,
                    district=com.district,
                    property_org=com.property,
                    building=dev.building,
                    location=dev.location,
                    maintenance_org=dev.maintenance,
                    params=dict(dev.params),
                )

    def gateway_devices(self, gateway_id: str) -> list[DeviceInfo]:
        return [d for d in self.devices.values() if d.gateway_id == gateway_id]

    def gateways(self) -> Iterator[tuple[str, Community]]:
        for com in self.registry.communities:
            for gw in com.gateways:
                yield gw.id, com


def parse_registry(data: Any, *, source: str = "<registry>", node: Any = None) -> Registry:
    """Validate registry data; raise RegistryError naming the line of each problem."""
    path = Path(source)
    if data is None:
        raise RegistryError(f"{source}: the registry is empty")
    try:
        reg = Registry.model_validate(data)
    except ValidationError as exc:
        raise RegistryError(validation_message(path, node, exc)) from exc
    problems = reg.problems()
    if problems:
        lines = [
            f"{source}:{line_of(_node_at(node, loc)) or '?'}: "
            f"{'.'.join(str(p) for p in loc)}: {msg}"
            for loc, msg in problems
        ]
        raise RegistryError("\n".join(lines))
    return reg


def load_registry(path: Path | str) -> Registry:
    """Read and validate a registry YAML file."""
    p = Path(path)
    data, node = read_yaml(p)
    return parse_registry(data, source=str(p), node=node)


def sample_registry_path() -> Path:
    """The sample Jiaxing registry shipped with anju."""
    return Path(__file__).parent / "data" / "jiaxing.yaml"
