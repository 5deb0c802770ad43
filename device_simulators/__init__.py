"""Simulated devices for anju: elevators, smoke detectors, water pressure, access control.

Each model (`Elevator`, `SmokeDetector`, `WaterPressure`, `AccessController`) is a plain object
driven by a clock the caller owns: `step(now_ms)` returns the `Message`s the device would have
published up to that device time, `inject(action, params, now_ms)` applies a scenario fault.
`run_simulation` drives the models of a registry's gateways against their LAN brokers over
MQTT, with time compression and a `Scenario` of timed faults (`load_scenario`).
"""

from device_simulators.access import AccessController
from device_simulators.base import (
    GENERIC_ACTIONS,
    Channel,
    DeviceModel,
    Message,
    Payload,
    SimulatorError,
)
from device_simulators.elevator import Elevator
from device_simulators.fire import SmokeDetector, WaterPressure
from device_simulators.fleet import (
    MODEL_CLASSES,
    Fleet,
    Timing,
    build_fleet,
    build_model,
    device_rng,
)
from device_simulators.runner import SimSummary, run_simulation
from device_simulators.scenario import (
    ExpectedAlert,
    Scenario,
    ScenarioAction,
    demo_scenario_path,
    load_scenario,
    scenarios_dir,
)

__all__ = [
    "GENERIC_ACTIONS",
    "MODEL_CLASSES",
    "AccessController",
    "Channel",
    "DeviceModel",
    "Elevator",
    "ExpectedAlert",
    "Fleet",
    "Message",
    "Payload",
    "Scenario",
    "ScenarioAction",
    "SimSummary",
    "SimulatorError",
    "SmokeDetector",
    "Timing",
    "WaterPressure",
    "build_fleet",
    "build_model",
    "demo_scenario_path",
    "device_rng",
    "load_scenario",
    "run_simulation",
    "scenarios_dir",
]
