"""Every scenario file shipped in anju/data/scenarios raises exactly its expected alerts.

Each scenario runs in-process (device_simulators.harness): the device models are stepped in
simulated device time, their messages are validated as the gateway does and fed, as uplink
records, to the real rule engine. No broker, no database, no wall clock: a scenario of several
minutes runs in a fraction of a second, and the same seed gives the same run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from anju.registry import CityIndex, load_registry, sample_registry_path
from backend.alerting import Engine
from device_simulators import (
    load_scenario,
    run_scenario,
    scenario_registry,
    scenarios_dir,
)

SCENARIOS = sorted(scenarios_dir().glob("*.yaml"))


def test_there_are_scenarios_for_the_catalog() -> None:
    names = {p.stem for p in SCENARIOS}
    assert "demo" in names and len(names) >= 25


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_raises_exactly_its_expected_alerts(path: Path) -> None:
    scenario = load_scenario(path, registry=load_registry(sample_registry_path()))
    registry = scenario_registry(scenario, path)
    result = run_scenario(scenario, registry, Engine(CityIndex(registry)))
    assert result.rejected == [], "the simulators broke the device contract"
    assert result.messages > 0
    expected = Counter((e.type, e.device) for e in scenario.expect)
    raised = Counter(result.raised)
    assert raised == expected, (
        f"{path.name}: expected {sorted(expected.elements())}, "
        f"raised {sorted(raised.elements())}\nall changes:\n{result.log()}"
    )
    for e in scenario.expect:
        if e.severity is not None:
            assert result.severity_at_raise(e.type, e.device) == e.severity, result.log()


def test_a_scenario_is_deterministic() -> None:
    path = scenarios_dir() / "fire_spreading.yaml"
    scenario = load_scenario(path)
    registry = scenario_registry(scenario, path)
    runs = [run_scenario(scenario, registry, Engine(CityIndex(registry))) for _ in range(2)]
    assert runs[0].raised == runs[1].raised
    assert [(c.at_s, c.type, c.device) for c in runs[0].changes] == [
        (c.at_s, c.type, c.device) for c in runs[1].changes
    ]
    assert runs[0].messages == runs[1].messages


def test_the_demo_alerts_come_at_their_device_times() -> None:
    """The rules see device time under compression: trapped 30 s after the trap at t=10 s,
    the fire alarms at t=35 s and t=50 s."""
    path = scenarios_dir() / "demo.yaml"
    scenario = load_scenario(path)
    registry = scenario_registry(scenario, path)
    result = run_scenario(scenario, registry, Engine(CityIndex(registry)))
    at = {(c.type, c.device): c.at_s for c in result.changes if c.action == "raised"}
    assert 40.0 <= at[("elevator.trapped", "jx-nh-0001-elev-01")] <= 41.5
    assert 35.0 <= at[("fire.alarm", "jx-nh-0001-smoke-3-1201")] <= 35.2
    assert 50.0 <= at[("fire.alarm", "jx-nh-0001-smoke-3-0801")] <= 50.2
    confirmed = [
        c
        for c in result.changes
        if c.action == "updated" and c.type == "fire.alarm" and c.device.endswith("3-1201")
    ]
    assert confirmed and 50.0 <= confirmed[0].at_s <= 50.2
