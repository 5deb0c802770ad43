"""The device kinds added for the whole catalog, the city generator and the benchmark."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

from anju.contract import device_topic
from anju.registry import load_registry, parse_registry
from benches.simulate import run as bench_run
from device_simulators import (
    MODEL_CLASSES,
    Behaviour,
    CityPlan,
    FirePanel,
    HeatDetector,
    Message,
    SmokeDetector,
    build_fleet,
    generate_registry,
    write_registry,
)
from device_simulators.mqttlink import encode
from device_simulators.registrygen import JIAXING_DISTRICTS
from gateway.validate import Accepted, decode_device_message

T0 = 1_764_122_400_000


def events(msgs: list[Message]) -> list[tuple[int, str]]:
    return [(p["ts"], p["type"]) for ch, p in msgs if ch == "event"]


def test_every_kind_follows_the_contract_for_hours_of_noise() -> None:
    reg = parse_registry(generate_registry(CityPlan(communities=1, seed=3, buildings_max=4)))
    noisy = Behaviour(false_alarms_per_year=20_000.0, camera_events_per_hour=20.0)
    fleet = build_fleet(reg, seed=3, start_ms=T0, behaviour=noisy)
    assert {m.kind for m in fleet.models.values()} == set(MODEL_CLASSES)
    seen: dict[str, set[str]] = {}
    for dev_id, model in fleet.models.items():
        msgs = model.step(T0 + 3 * 3_600_000)
        for channel, payload in msgs:
            items = decode_device_message(
                device_topic(dev_id, channel), encode(payload), known={dev_id}, rx_ms=T0
            )
            assert items and all(isinstance(i, Accepted) for i in items), (dev_id, items)
            if channel == "event":
                seen.setdefault(model.kind, set()).add(payload["type"])
        assert any(ch == "telemetry" for ch, _ in msgs), dev_id  # heartbeats at least
    assert "alarm" in seen["smoke_detector"] and "alarm" in seen["heat_detector"]
    assert "ebike_detected" in seen["camera"]
    assert {"access_granted"} <= seen["access_controller"]


def test_a_false_alarm_is_real_and_clears_by_itself() -> None:
    s = SmokeDetector(
        "s-1",
        {},
        rng=random.Random(4),
        start_ms=T0,
        behaviour=Behaviour(false_alarms_per_year=365 * 24.0),  # one an hour
    )
    msgs = s.step(T0 + 12 * 3_600_000)
    alarms = [ts for ts, t in events(msgs) if t == "alarm"]
    assert 3 <= len(alarms) <= 40
    reports = [(p["ts"], p["metrics"]["smoke"]) for ch, p in msgs if ch == "telemetry"]
    after_first = [smoke for ts, smoke in reports if ts > alarms[0] + 70_000]
    assert after_first and not all(after_first)
    quiet = SmokeDetector("s-2", {}, rng=random.Random(4), start_ms=T0, behaviour=Behaviour.quiet())
    assert events(quiet.step(T0 + 30 * 86_400_000)) == []


def test_heat_detector_rises_and_alarms_at_its_fixed_temperature() -> None:
    h = HeatDetector("h-1", {}, rng=random.Random(1), start_ms=T0, behaviour=Behaviour.quiet())
    h.step(T0 + 60_000)
    h.inject("fire", {"rise_c_per_min": 15}, T0 + 60_000)
    msgs = h.step(T0 + 360_000)
    [(_ts, kind)] = events(msgs)
    temps = [p["metrics"]["temperature_c"] for ch, p in msgs if ch == "telemetry"]
    assert kind == "alarm" and temps == sorted(temps) and max(temps) > 57
    rise_per_min = (temps[12] - temps[0]) / 1.0  # reports every 5 s while rising
    assert 13 <= rise_per_min <= 17


def test_fire_panel_linkage_feedback() -> None:
    p = FirePanel("p-1", {"system_addr": 2}, rng=random.Random(1), start_ms=T0)
    p.inject("start", {"component_addr": 3001, "feedback_s": 2}, T0 + 10_000)
    p.inject("start", {"component_addr": 3002, "no_feedback": True}, T0 + 11_000)
    msgs = p.step(T0 + 60_000)
    evs = [
        (pl["ts"] - T0, pl["type"], pl["data"]["component_addr"])
        for ch, pl in msgs
        if ch == "event"
    ]
    assert evs == [(10_000, "start", 3001), (11_000, "start", 3002), (12_000, "feedback", 3001)]
    data = next(pl["data"] for ch, pl in msgs if ch == "event")
    assert set(data) == {"system_type", "system_addr", "component_type", "component_addr", "text"}


def test_batteries_run_down_and_the_status_follows() -> None:
    s = SmokeDetector("s-1", {}, rng=random.Random(1), start_ms=T0, behaviour=Behaviour.quiet())
    s.inject("battery", {"pct": 25, "drain_pct_per_h": 3.6}, T0)  # 0.001 % a second
    msgs = s.step(T0 + 3 * 3_600_000)
    levels = [p["battery_pct"] for ch, p in msgs if ch == "status"]
    assert levels == list(range(25, 25 - len(levels), -1)) and len(levels) >= 10


def test_devices_are_stepped_only_when_due() -> None:
    s = SmokeDetector("s-1", {}, rng=random.Random(1), start_ms=T0, behaviour=Behaviour.quiet())
    stamps = []
    t = T0
    for _ in range(30):
        t = s.due_ms()
        stamps += [p["ts"] for ch, p in s.step(t) if ch == "telemetry"]
    gaps = {b - a for a, b in itertools.pairwise(stamps)}
    assert gaps == {10_000}


def test_clock_offset_and_silence() -> None:
    s = SmokeDetector("s-1", {}, rng=random.Random(1), start_ms=T0, behaviour=Behaviour.quiet())
    s.inject("clock_offset", {"s": 400}, T0 + 1000)
    [(_ch, p)] = [m for m in s.step(T0 + 1000) if m[0] == "telemetry"]
    assert p["ts"] == T0 + 1000 + 400_000
    s.inject("silent", {}, T0 + 2000)
    assert s.step(T0 + 600_000) == []


def test_city_generator_is_real_jiaxing_deterministic_and_valid(tmp_path: Path) -> None:
    plan = CityPlan(communities=14, seed=5)
    data = generate_registry(plan)
    assert data == generate_registry(plan)
    assert data != generate_registry(CityPlan(communities=14, seed=6))
    codes = {code: (name, streets) for code, name, _, streets in JIAXING_DISTRICTS}
    assert {d["code"] for d in data["districts"]} == {
        "330402", "330411", "330421", "330424", "330481", "330482", "330483",
    }  # fmt: skip
    for com in data["communities"]:
        assert com["street"] in codes[com["district"]][1]
    out = tmp_path / "city.yaml"
    reg = write_registry(plan, out)
    again = load_registry(out)
    assert again == reg
    devices = sum(len(c.devices) for c in reg.communities)
    assert 14 * 60 <= devices <= 14 * 250
    assert {d.kind for c in reg.communities for d in c.devices} == set(MODEL_CLASSES)
    one = generate_registry(CityPlan(communities=3, districts=("330481",)))
    assert [c["id"] for c in one["communities"]] == ["jx-hn-0001", "jx-hn-0002", "jx-hn-0003"]
    assert json.dumps(one, ensure_ascii=False).count("海宁市") == 1


def test_bench_simulate_quick_has_its_keys() -> None:
    figures = bench_run(quick=True)
    assert {"devices", "readings_per_s", "cpu_cores_used"} <= set(figures)
    assert figures["devices"] > 1000 and figures["readings_per_s"] > 0
