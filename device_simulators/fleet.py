"""Build device models from a registry: which kinds are simulated, seeds, reporting timing."""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field

from anju.registry import Device, Registry
from device_simulators.access import AccessController
from device_simulators.base import Behaviour, DeviceModel
from device_simulators.elevator import Elevator
from device_simulators.fire import HeatDetector, ManualCallPoint, SmokeDetector
from device_simulators.panel import ElectricalFire, FireDoor, FirePanel
from device_simulators.security import Camera, EmergencyButton, Perimeter
from device_simulators.water import WaterPressure

MODEL_CLASSES: dict[str, type[DeviceModel]] = {
    cls.kind: cls
    for cls in (
        Elevator,
        SmokeDetector,
        HeatDetector,
        ManualCallPoint,
        FirePanel,
        WaterPressure,
        ElectricalFire,
        FireDoor,
        Camera,
        AccessController,
        EmergencyButton,
        Perimeter,
    )
}
"""The device kinds that have a simulator model, by kind (every kind of ALERTS.md).

All but the elevator take DeviceModel's constructor as it is; the elevator takes two report
intervals instead of one.
"""


@dataclass(frozen=True, slots=True)
class Timing:
    """Reporting intervals, in device seconds."""

    elevator_moving_s: float = 1.0
    elevator_idle_s: float = 2.0
    other_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Fleet:
    """The simulated devices of some gateways, and the devices left out."""

    models: dict[str, DeviceModel]
    """Models by device id."""
    gateway_of: dict[str, str]
    """Gateway id by device id."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Devices without a model: kind by device id."""


def device_rng(seed: int, device_id: str) -> random.Random:
    """A device's own random stream: the same seed and id give the same stream, whatever else
    the registry holds."""
    return random.Random(f"anju-sim:{seed}:{device_id}")


def build_model(
    device: Device,
    *,
    seed: int,
    start_ms: int,
    timing: Timing | None = None,
    behaviour: Behaviour | None = None,
) -> DeviceModel | None:
    """The model of one registry device, or None when its kind is not simulated."""
    t = timing or Timing()
    rng = device_rng(seed, device.id)
    params = dict(device.params)
    if device.kind == Elevator.kind:
        return Elevator(
            device.id,
            params,
            rng=rng,
            start_ms=start_ms,
            moving_interval_s=t.elevator_moving_s,
            idle_interval_s=t.elevator_idle_s,
            behaviour=behaviour,
        )
    cls = MODEL_CLASSES.get(device.kind)
    if cls is None:
        return None
    return cls(
        device.id, params, rng=rng, start_ms=start_ms, interval_s=t.other_s, behaviour=behaviour
    )


def build_fleet(
    registry: Registry,
    *,
    seed: int,
    start_ms: int,
    gateways: Collection[str] | None = None,
    timing: Timing | None = None,
    behaviour: Behaviour | None = None,
) -> Fleet:
    """Models for every simulated device of ``gateways`` (all gateways when None)."""
    models: dict[str, DeviceModel] = {}
    gateway_of: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for community in registry.communities:
        for device in community.devices:
            if gateways is not None and device.gateway not in gateways:
                continue
            model = build_model(
                device, seed=seed, start_ms=start_ms, timing=timing, behaviour=behaviour
            )
            if model is None:
                skipped[device.id] = device.kind
                continue
            models[device.id] = model
            gateway_of[device.id] = device.gateway
    return Fleet(models=models, gateway_of=gateway_of, skipped=skipped)
