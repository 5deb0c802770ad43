"""``anju demo --time-scale X`` applies to every simulator: the GB/T 26875.3 UITD plays its
scenario's steps X times sooner and the Modbus elevator traps X times sooner, as the MQTT
simulators' scenario does (docs/operations.md). No I/O: the UITD runs on a fake clock."""

from __future__ import annotations

import itertools
import threading

import pytest

from anju.registry import CityIndex, load_registry, sample_registry_path
from device_simulators import uitd
from gateway.adapters.demo import DemoAdapters
from gateway.adapters.gbt26875 import ComponentStatus, DataUnit


class _Clock:
    """``uitd.time`` with a monotonic clock that advances 2 s each time it is read."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        self.t += 2.0
        return self.t

    def sleep(self, _s: float) -> None:
        pass


class _Client(uitd.UitdClient):
    """Records each report with the clock's reading; stops the run at the first fire."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__("127.0.0.1", 1, bytes(6))
        self.clock = clock
        self.fire_at: float | None = None

    def report(self, unit: DataUnit | None, *, tries: int = 3) -> bool:
        if unit is not None and unit.type == 2:
            obj = unit.objects[0]
            assert isinstance(obj, ComponentStatus)
            if obj.component_addr == 2005:
                self.fire_at = self.clock.t
                self.stopping.set()
        return True


@pytest.mark.parametrize(("scale", "due_s"), [(4.0, 10.0), (40.0, 1.0)])
def test_the_uitd_plays_its_scenario_sooner_by_the_time_scale(
    monkeypatch: pytest.MonkeyPatch, scale: float, due_s: float
) -> None:
    clock = _Clock()
    monkeypatch.setattr(uitd, "time", clock)
    client = _Client(clock)
    scenario = uitd.load_uitd_scenario("demo")  # its first fire at t = 40 s
    assert min(s.at for s in scenario.steps if s.action == "fire") == 40
    uitd.Uitd(client).run(scenario, threading.Event(), time_scale=scale)
    assert client.fire_at is not None
    elapsed = client.fire_at - 2.0  # the run's start was the clock's first reading
    assert due_s <= elapsed < due_s + 2.0 * 3, elapsed


def test_the_demo_passes_its_time_scale_to_the_adapter_simulators() -> None:
    city = CityIndex(load_registry(sample_registry_path()))
    ports = itertools.count(20_000)
    sims = dict(DemoAdapters.plan(city, lambda: next(ports)).simulators(time_scale=4.0))
    uitds = [a for n, a in sims.items() if n.startswith("simulators-uitd-")]
    elevators = [a for n, a in sims.items() if n.startswith("simulators-modbus-")]
    assert uitds and elevators
    for argv in uitds:
        assert argv[argv.index("--time-scale") + 1] == "4.0"
    for argv in elevators:
        assert float(argv[argv.index("--trap-at") + 1]) == 15.0  # 60 s of demo time
