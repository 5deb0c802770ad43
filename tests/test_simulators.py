"""Device simulators: physical plausibility, determinism, scenario files, the sample registry.

No broker is needed: the models are driven by hand-made clocks; the one runner test points at a
closed loopback port to check that connection failures are survived and counted.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anju.contract import DEVICE_ID_RE, EVENT_TYPE_RE, MAX_STRING_LEN, METRIC_RE
from anju.errors import ConfigError
from anju.registry import load_registry, sample_registry_path
from device_simulators import (
    MODEL_CLASSES,
    AccessController,
    Elevator,
    Message,
    SimulatorError,
    SmokeDetector,
    WaterPressure,
    build_fleet,
    demo_scenario_path,
    load_scenario,
    run_simulation,
)

T0 = 1_764_122_400_000  # 2025-11-26 10:00:00 +08:00
PARAMS_18 = {"floors": 18, "lowest_floor": -1, "rated_speed_mps": 1.75}


def elevator(seed: int = 1, **params: int | float) -> Elevator:
    return Elevator("e-1", {**PARAMS_18, **params}, rng=random.Random(seed), start_ms=T0)


def check_elevator_state(e: Elevator) -> None:
    """The invariants of a real car, on the model's own state; injected faults excepted."""
    offset_m = abs(e.position - round(e.position)) * e.floor_height_m
    if e.up_limit or e.down_limit:  # overtravel: past a terminal landing, on the limit switch
        assert e.faulted and not e.moving and -0.5 < e.position < len(e.levels) - 0.5
    else:
        assert 0 <= e.position <= len(e.levels) - 1
    assert e.in_door_zone == (offset_m <= e.door_zone_m) or e.up_limit or e.down_limit
    if e.door_open and not e.door_forced_open:
        assert not e.moving and e.speed_mps == 0 and offset_m < 1e-9
    if e.door_forced_open:
        assert e.faulted
    if not e.moving:
        assert e.speed_mps == 0 and e.direction == 0
    assert e.speed_mps <= e.speed_limit_mps + 1e-9
    if e.speed_limit_mps <= e.rated_speed_mps:
        assert e.speed_mps <= e.rated_speed_mps + 1e-9


def check_elevator_report(e: Elevator, metrics: dict[str, object]) -> None:
    """The invariants of what the car reports: never a floor outside the building, never
    moving with the door open unless that fault was injected."""
    lowest = int(PARAMS_18["lowest_floor"])
    top = int(PARAMS_18["floors"])
    floor = metrics["floor"]
    assert isinstance(floor, int) and lowest <= floor <= top and floor != 0
    if metrics["door"] == "open" and not e.door_forced_open:
        assert metrics["moving"] is False
        assert metrics["in_door_zone"] is True
        assert metrics["speed_mps"] == 0
    if metrics["moving"] is False:
        assert metrics["speed_mps"] == 0 and metrics["direction"] == "none"
    if metrics["up_limit"] or metrics["down_limit"]:
        assert metrics["moving"] is False and metrics["in_door_zone"] is False
    assert metrics["door"] in ("open", "closed")
    assert metrics["direction"] in ("up", "down", "none")


def telemetry(messages: list[Message]) -> list[dict[str, Any]]:
    return [p["metrics"] for ch, p in messages if ch == "telemetry"]


def run(e: Elevator, start_ms: int, end_ms: int, rng: random.Random) -> list[Message]:
    """Step with irregular ticks (50 ms to 3 s) and check the state after every step."""
    out: list[Message] = []
    t = start_ms
    while t < end_ms:
        t = min(end_ms, t + rng.randint(50, 3000))
        msgs = e.step(t)
        check_elevator_state(e)
        for m in telemetry(msgs):
            check_elevator_report(e, m)
        out.extend(msgs)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_elevator_long_run_is_physically_possible(seed: int) -> None:
    e = elevator(seed)
    msgs = run(e, T0, T0 + 3 * 3600 * 1000, random.Random(seed))
    reports = telemetry(msgs)
    # Not vacuous: the car travelled both ways, carried passengers and opened its doors.
    assert {m["direction"] for m in reports} >= {"up", "down"}
    assert any(m["passenger"] for m in reports)
    assert any(m["door"] == "open" for m in reports)
    assert any(m["moving"] and not m["in_door_zone"] for m in reports)
    counts = [m["run_count"] for m in reports]
    assert counts == sorted(counts) and counts[-1] > counts[0] + 50
    # Moving reports every second, idle every two (ALERTS.md reporting intervals).
    gaps = [
        b["ts"] - a["ts"]
        for (ca, a), (cb, b) in itertools.pairwise(msgs)
        if ca == cb == "telemetry" and a["metrics"]["moving"] and b["metrics"]["moving"]
    ]
    assert gaps and max(gaps) <= 1000


ACTIONS = st.sampled_from(
    [
        ("trap", {"between_floors": True}),
        ("trap", {"between_floors": False}),
        ("release", {}),
        ("power_outage", {}),
        ("power_restore", {}),
        ("service_mode", {"mode": "inspection"}),
        ("service_mode", {"mode": "normal"}),
        ("event", {"type": "alarm_button"}),
        ("overspeed", {"factor": 1.3}),
        ("overtravel", {"end": "top"}),
        ("overtravel", {"end": "bottom"}),
        ("door_open_moving", {}),
        ("stall", {}),
        ("hold_door", {}),
        ("door_cycling", {"cycles": 6}),
        ("call", {"from": -1, "to": 18}),
        ("traffic", {"calls_per_hour": 600}),
        ("traffic", {"calls_per_hour": 0}),
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    script=st.lists(st.tuples(st.integers(0, 120_000), ACTIONS), max_size=12),
)
@example(seed=0, script=[(0, ("door_open_moving", {})), (0, ("trap", {"between_floors": True}))])
def test_elevator_stays_possible_under_any_faults(
    seed: int, script: list[tuple[int, tuple[str, dict[str, str | bool]]]]
) -> None:
    e = elevator(seed)
    rng = random.Random(seed)
    t = T0
    for gap_ms, (action, params) in script:
        run(e, t, t + gap_ms, rng)
        t += gap_ms
        e.inject(action, params, t)
        check_elevator_state(e)
        # What the action made the car report is checked against the state it reported from
        # (a second fault in the same millisecond must not be blamed on the first's report).
        for channel, payload in e.step(t):
            if channel == "telemetry":
                check_elevator_report(e, payload["metrics"])
    run(e, t, t + 120_000, rng)


@pytest.mark.parametrize("between", [True, False])
def test_trap_holds_the_passenger_until_release(between: bool) -> None:
    e = elevator(7)
    rng = random.Random(7)
    run(e, T0, T0 + 95_000, rng)
    e.inject("trap", {"between_floors": between}, T0 + 95_000)
    trapped = telemetry(run(e, T0 + 95_000, T0 + 160_000, rng))
    assert len(trapped) >= 30  # every 2 s while still
    for m in trapped:
        assert m["passenger"] is True and m["moving"] is False and m["door"] == "closed"
        assert m["in_door_zone"] is (not between)
    e.inject("release", {}, T0 + 160_000)
    after = telemetry(run(e, T0 + 160_000, T0 + 175_000, rng))
    assert after[0]["door"] == "open" and after[0]["in_door_zone"] is True
    assert any(m["passenger"] is False for m in after)


def test_same_seed_same_city_different_seed_different() -> None:
    reg = load_registry(sample_registry_path())

    def record(seed: int) -> list[tuple[str, Message]]:
        fleet = build_fleet(reg, seed=seed, start_ms=T0)
        out: list[tuple[str, Message]] = []
        for t in range(T0, T0 + 600_000, 200):
            for dev_id, model in fleet.models.items():
                out.extend((dev_id, m) for m in model.step(t))
        return out

    first = record(5)
    assert first == record(5)
    assert first != record(6)
    assert {d for d, _ in first} == {d.id for c in reg.communities for d in c.devices}


def test_messages_follow_the_wire_contract() -> None:
    rng = random.Random(3)
    models = [
        elevator(3),
        SmokeDetector("s-1", {}, rng=random.Random(3), start_ms=T0),
        WaterPressure("w-1", {"min_mpa": 0.1, "system": "hydrant"}, rng=rng, start_ms=T0),
        AccessController("a-1", {}, rng=random.Random(4), start_ms=T0),
    ]
    for model in models:
        assert DEVICE_ID_RE.match(model.device_id)
        status = model.status()
        assert status["online"] is True and status["fw"] == "1.0.0"
        msgs = model.step(T0 + 3_600_000)
        assert msgs
        last_ts = 0
        for channel, payload in msgs:
            json.dumps(payload, allow_nan=False)
            assert isinstance(payload["ts"], int) and payload["ts"] >= last_ts
            last_ts = payload["ts"]
            if channel == "telemetry":
                for name, value in payload["metrics"].items():
                    assert METRIC_RE.match(name)
                    assert isinstance(value, bool | int | float | str)
                    assert not isinstance(value, float) or math.isfinite(value)
                    assert not isinstance(value, str) or len(value) <= MAX_STRING_LEN
            else:
                assert channel == "event" and EVENT_TYPE_RE.match(payload["type"])
                assert payload["type"] in type(model).event_types


def test_smoke_alarm_and_clear() -> None:
    s = SmokeDetector("s-1", {}, rng=random.Random(1), start_ms=T0)
    quiet = s.step(T0 + 60_000)
    assert all(m["smoke"] is False and m["obscuration_db_m"] < 0.1 for m in telemetry(quiet))
    s.inject("smoke", {}, T0 + 65_000)
    msgs = s.step(T0 + 65_000)
    assert msgs[0] == ("event", {"ts": T0 + 65_000, "type": "alarm", "data": msgs[0][1]["data"]})
    assert telemetry(msgs)[-1]["smoke"] is True
    s.inject("smoke", {}, T0 + 66_000)  # a detector in alarm does not alarm again
    assert not [m for m in s.step(T0 + 90_000) if m[0] == "event"]
    s.inject("clear", {}, T0 + 90_000)
    assert telemetry(s.step(T0 + 90_000))[-1]["smoke"] is False


def test_water_pressure_cycles_and_drops() -> None:
    w = WaterPressure("w-1", {}, rng=random.Random(2), start_ms=T0)
    values = [m["pressure_mpa"] for m in telemetry(w.step(T0 + 3_600_000))]
    assert len(values) >= 350
    assert min(values) >= 0.26 and max(values) <= 0.37
    assert max(values) - min(values) > 0.05  # the jockey pump cycles
    w.inject("pressure_drop", {"mpa": 0.05}, T0 + 3_600_000)
    assert telemetry(w.step(T0 + 3_700_000))[-1]["pressure_mpa"] < 0.1


def test_access_traffic_follows_the_time_of_day() -> None:
    def grants(start_ms: int) -> int:
        a = AccessController("a-1", {}, rng=random.Random(9), start_ms=start_ms)
        msgs = a.step(start_ms + 3_600_000)
        return sum(1 for ch, p in msgs if ch == "event" and p["type"] == "access_granted")

    rush = grants(T0 - 2 * 3_600_000)  # 08:00 local
    night = grants(T0 - 7 * 3_600_000)  # 03:00 local
    assert rush > 60 and night < rush / 10


def test_generic_and_unknown_actions() -> None:
    s = SmokeDetector("s-1", {}, rng=random.Random(1), start_ms=T0)
    s.inject("offline", {}, T0 + 1000)
    assert s.step(T0 + 100_000) == [("status", {"online": False})]
    s.inject("online", {}, T0 + 100_000)
    msgs = s.step(T0 + 100_000)
    assert msgs[0][0] == "status" and msgs[0][1]["online"] is True
    s.inject("event", {"type": "tamper", "note": "cover removed"}, T0 + 101_000)
    assert s.step(T0 + 101_000)[0][1]["data"] == {"note": "cover removed"}
    with pytest.raises(SimulatorError, match="unknown action 'trap'"):
        s.inject("trap", {}, T0 + 102_000)
    with pytest.raises(SimulatorError, match="does not send event"):
        s.inject("event", {"type": "alarm_button"}, T0 + 102_000)
    with pytest.raises(SimulatorError, match="floors"):
        Elevator("e-1", {"floors": "ten"}, rng=random.Random(1), start_ms=T0)


def test_sample_registry_has_the_demo_devices() -> None:
    reg = load_registry(sample_registry_path())
    assert {d.code for d in reg.districts} == {"330402", "330411", "330421"}
    assert len(reg.communities) == 3
    for com in reg.communities:
        kinds = [d.kind for d in com.devices]
        assert [g.id for g in com.gateways] == [f"gw-{com.id}-a"]
        assert kinds.count("elevator") == 2 and kinds.count("smoke_detector") >= 4
        assert kinds.count("water_pressure") == 1 and kinds.count("access_controller") == 1
        smoke_buildings = {d.building for d in com.devices if d.kind == "smoke_detector"}
        assert len(smoke_buildings) == 2
        for d in com.devices:
            if d.kind == "elevator":
                assert d.maintenance and {"floors", "lowest_floor", "rated_speed_mps"} <= set(
                    d.params
                )
    # 梅湾花园 has one of every kind, for the scenarios.
    assert {d.kind for d in reg.communities[0].devices} == set(MODEL_CLASSES)
    nh = reg.communities[0]
    devices = {d.id: d for d in nh.devices}
    for dev_id in ("jx-nh-0001-elev-01", "jx-nh-0001-smoke-3-1201", "jx-nh-0001-smoke-3-0801"):
        assert devices[dev_id].building == "3"
    scenario = load_scenario(demo_scenario_path(), registry=reg)
    named = {a.device for a in scenario.actions} | {e.device for e in scenario.expect}
    assert named <= set(devices)
    # Every device of the sample registry has a model.
    assert not build_fleet(reg, seed=1, start_ms=T0).skipped


def test_demo_scenario_content() -> None:
    scenario = load_scenario(demo_scenario_path())
    assert [(a.at, a.device, a.action) for a in scenario.timeline()] == [
        (10, "jx-nh-0001-elev-01", "trap"),
        (35, "jx-nh-0001-smoke-3-1201", "smoke"),
        (50, "jx-nh-0001-smoke-3-0801", "smoke"),
    ]
    assert scenario.actions[0].params == {"between_floors": True}
    assert ("elevator.trapped", "jx-nh-0001-elev-01") in {
        (e.type, e.device) for e in scenario.expect
    }


BAD_SCENARIOS = {
    "unknown key": (
        "name: x\nactions:\n  - {at: 1, device: d-1, action: smoke}\n"
        "  - {at: 2, device: d-1, action: smoke, colour: red}\n",
        4,
        "colour",
    ),
    "negative time": (
        "name: x\nactions:\n  - {at: -5, device: d-1, action: smoke}\n",
        3,
        "actions.0.at",
    ),
    "bad alert type": (
        "name: x\nexpect:\n\n  - {type: Trapped!, device: d-1}\n",
        4,
        "expect.0.type",
    ),
    "not yaml": ("name: x\nactions: [\n", None, "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENARIOS))
def test_bad_scenario_names_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, words = BAD_SCENARIOS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_scenario(path)
    message = str(err.value)
    assert str(path) in message and words in message
    if line is not None:
        assert f"{path}:{line}:" in message


def test_scenario_checked_against_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "wrong.yaml"
    path.write_text(
        "name: wrong\n"
        "actions:\n"
        "  - {at: 1, device: jx-nh-0001-elev-01, action: trap}\n"
        "  - {at: 2, device: jx-nh-0001-smoke-3-1201, action: trap}\n"
        "  - {at: 3, device: jx-nh-9999-elev-01, action: trap}\n",
        encoding="utf-8",
    )
    reg = load_registry(sample_registry_path())
    with pytest.raises(ConfigError) as err:
        load_scenario(path, registry=reg)
    message = str(err.value)
    assert f"{path}:4: actions.1.action: a smoke_detector has no action 'trap'" in message
    assert f"{path}:5: actions.2.device: unknown device 'jx-nh-9999-elev-01'" in message
    assert ":3:" not in message


def test_scenario_must_fit_its_duration(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(
        "name: s\nduration_s: 5\nactions:\n  - {at: 9, device: d, action: smoke}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="ends before the last action"):
        load_scenario(path)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_runner_survives_an_unreachable_broker() -> None:
    reg = load_registry(sample_registry_path())
    lines: list[str] = []
    summary = run_simulation(
        reg,
        {"gw-jx-nh-0001-a": f"mqtt://127.0.0.1:{closed_port()}"},
        scenario=load_scenario(demo_scenario_path()),
        duration_s=60,
        time_scale=200,
        log=lines.append,
        stop=threading.Event(),
    )
    assert summary.devices == 19 and summary.gateways == 1 and summary.actions == 3
    assert summary.sim_s == 60
    assert summary.dropped["telemetry"] > 0 and summary.sent["telemetry"] == 0
    assert "scenario t=10s: jx-nh-0001-elev-01 trap (between_floors=True)" in lines
    assert any("cannot connect" in line for line in lines)
