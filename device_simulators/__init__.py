"""Simulated devices for anju: a model of every device kind of ALERTS.md, scenarios, a city.

Each model (``Elevator``, ``SmokeDetector``, ``HeatDetector``, ``ManualCallPoint``,
``FirePanel``, ``WaterPressure``, ``ElectricalFire``, ``FireDoor``, ``Camera``,
``AccessController``, ``EmergencyButton``, ``Perimeter``) is a plain object driven by a clock the
caller owns: ``step(now_ms)`` returns the ``Message``s the device would have published up to
that time, ``inject(action, params, now_ms)`` applies a scenario fault, ``due_ms()`` says when it
next has something to do. ``run_simulation`` drives the models of a registry's gateways against
their LAN brokers over MQTT, with time compression and a ``Scenario`` of timed faults
(``load_scenario``); ``run_scenario`` plays a scenario in-process against a rule engine;
``generate_registry`` writes a city of any size in Jiaxing's real districts and streets.
"""

from device_simulators.access import AccessController
from device_simulators.base import (
    GENERIC_ACTIONS,
    Behaviour,
    Channel,
    DeviceModel,
    Message,
    Payload,
    SimulatorError,
)
from device_simulators.elevator import Elevator
from device_simulators.fire import HeatDetector, ManualCallPoint, SmokeDetector
from device_simulators.fleet import (
    MODEL_CLASSES,
    Fleet,
    Timing,
    build_fleet,
    build_model,
    device_rng,
)
from device_simulators.harness import AlertChange, ScenarioResult, run_scenario
from device_simulators.panel import ElectricalFire, FireDoor, FirePanel
from device_simulators.registrygen import CityPlan, generate_registry, write_registry
from device_simulators.runner import SimSummary, run_simulation
from device_simulators.scenario import (
    GATEWAY_ACTIONS,
    ExpectedAlert,
    Scenario,
    ScenarioAction,
    demo_scenario_path,
    load_scenario,
    scenario_registry,
    scenarios_dir,
)
from device_simulators.security import Camera, EmergencyButton, Perimeter
from device_simulators.water import WaterPressure

__all__ = [
    "GATEWAY_ACTIONS",
    "GENERIC_ACTIONS",
    "MODEL_CLASSES",
    "AccessController",
    "AlertChange",
    "Behaviour",
    "Camera",
    "Channel",
    "CityPlan",
    "DeviceModel",
    "ElectricalFire",
    "Elevator",
    "EmergencyButton",
    "ExpectedAlert",
    "FireDoor",
    "FirePanel",
    "Fleet",
    "HeatDetector",
    "ManualCallPoint",
    "Message",
    "Payload",
    "Perimeter",
    "Scenario",
    "ScenarioAction",
    "ScenarioResult",
    "SimSummary",
    "SimulatorError",
    "SmokeDetector",
    "Timing",
    "WaterPressure",
    "build_fleet",
    "build_model",
    "demo_scenario_path",
    "device_rng",
    "generate_registry",
    "load_scenario",
    "run_scenario",
    "run_simulation",
    "scenario_registry",
    "scenarios_dir",
    "write_registry",
]
