"""Scenario tests for every fire alert (fire.alarm is also covered in test_rules.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.alerting.rules_fire import rise_per_min, window_slope
from backend.alerting.testing import Feeder

SMOKE, HEAT, PANEL = "c0-smoke_detector-0", "c0-heat_detector-0", "c0-fire_panel-0"
MCP, WATER, ELEC, DOOR = (
    "c0-manual_call_point-0",
    "c0-water_pressure-0",
    "c0-electrical_fire-0",
    "c0-fire_door-0",
)
CAM = "c0-camera-0"


def test_fire_alarm_at_once_from_every_trigger_kind_and_panel_reset() -> None:
    f = Feeder()
    assert f.types(f.event(MCP, 0, "alarm")) == ["fire.alarm"]
    # (another building: no confirmation between them)
    assert f.types(f.event("c0-heat_detector-1", 0, "alarm")) == ["fire.alarm"]
    [ch] = [
        c
        for c in f.event(PANEL, 0, "fire", system_addr=1, component_addr=12)
        if c.alert.device.id == PANEL
    ]
    assert ch.payload["evidence"]["confirmed"] is True  # the call point in building 1 alarmed
    assert ch.payload["evidence"]["component"]["component_addr"] == 12
    assert f.types(f.event(PANEL, 10, "reset"), "resolved") == ["fire.alarm"]
    assert f.event(SMOKE, 1, "test") == []
    assert "fire.alarm" in f.open_types(MCP)  # a detector's alarm waits for a person


def test_two_components_of_one_panel_confirm_each_other() -> None:
    f = Feeder()
    f.event(PANEL, 0, "fire", system_addr=1, component_addr=12)
    [upd] = f.event(PANEL, 30, "fire", system_addr=1, component_addr=13)
    assert upd.action == "updated" and upd.payload["evidence"]["confirmed"] is True


def test_electrical_10_s_over_the_limit_and_90_percent_for_60_s() -> None:
    f = Feeder()
    f.tel(ELEC, 0, residual_current_ma=299, cable_temp_c=40)
    assert f.tel(ELEC, 20, residual_current_ma=299) == []  # just under
    f.tel(ELEC, 21, residual_current_ma=300)
    assert f.tel(ELEC, 30.9, residual_current_ma=310) == []  # just too short
    assert f.types(f.tel(ELEC, 31, residual_current_ma=310)) == ["fire.electrical"]
    f.tel(ELEC, 40, residual_current_ma=280)  # below the limit, above 90 %
    assert f.tel(ELEC, 200, residual_current_ma=280) == []
    f.tel(ELEC, 201, residual_current_ma=260)
    assert f.tel(ELEC, 260.9, residual_current_ma=260) == []
    assert f.types(f.tel(ELEC, 261, residual_current_ma=260), "resolved") == ["fire.electrical"]
    g = Feeder()
    g.tel(ELEC, 0, cable_temp_c=80)
    assert g.types(g.tick(10)) == ["fire.electrical"]


def test_water_pressure_low_for_60_s_and_recovery_with_hysteresis() -> None:
    f = Feeder()
    f.tel(WATER, 0, pressure_mpa=0.09)
    assert f.tel(WATER, 30, pressure_mpa=0.10) == []  # back at the minimum: timer reset
    f.tel(WATER, 31, pressure_mpa=0.09)
    assert f.tel(WATER, 90.9, pressure_mpa=0.09) == []
    assert f.types(f.tel(WATER, 91, pressure_mpa=0.09)) == ["fire.water_pressure_low"]
    f.tel(WATER, 100, pressure_mpa=0.11)  # above the minimum, below minimum + 0.02
    assert f.tel(WATER, 200, pressure_mpa=0.11) == []
    f.tel(WATER, 201, pressure_mpa=0.12)
    assert f.types(f.tel(WATER, 261, pressure_mpa=0.12), "resolved") == ["fire.water_pressure_low"]


def test_heat_rise_slope_over_60_s() -> None:
    assert abs(rise_per_min([0, 30_000, 60_000], [20.0, 25.0, 30.0]) - 10.0) < 1e-9


@given(
    st.lists(
        st.tuples(st.integers(0, 120_000), st.floats(-40, 150, allow_nan=False)),
        min_size=2,
        max_size=40,
    )
)
def test_window_slope_agrees_with_numpy(points: list[tuple[int, float]]) -> None:
    """The plain-Python slope of short windows is numpy's (the long-window path)."""
    w = sorted((float(t), y) for t, y in points)
    expected = rise_per_min([int(t) for t, _ in w], [y for _, y in w])
    assert window_slope(w) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    f = Feeder()
    for i in range(7):  # 9.9 degC/min: just under
        assert f.tel(HEAT, i * 10, temperature_c=20 + 9.9 * i / 6) == []
    g = Feeder()
    out = []
    for i in range(7):
        out += g.tel(HEAT, i * 10, temperature_c=20 + 12 * i / 6)
    assert g.types(out) == ["fire.heat_rise"]
    t = 70.0
    for _ in range(12):  # flat: rise below half the limit for 60 s
        out = g.tel(HEAT, t, temperature_c=32)
        t += 10
    assert "fire.heat_rise" not in g.open_types(HEAT)


def test_panel_fault_disabled_supervisory() -> None:
    f = Feeder()
    assert f.types(f.event(PANEL, 0, "power_fault", text="backup")) == ["fire.panel_fault"]
    assert f.types(f.event(PANEL, 1, "normal"), "resolved") == ["fire.panel_fault"]
    assert f.types(f.event(PANEL, 2, "disabled")) == ["fire.panel_disabled"]
    assert f.types(f.event(PANEL, 3, "enabled"), "resolved") == ["fire.panel_disabled"]
    assert f.types(f.event(PANEL, 4, "supervisory")) == ["fire.supervisory"]
    assert f.types(f.event(PANEL, 5, "reset"), "resolved") == ["fire.supervisory"]


def test_linkage_without_feedback_within_10_s() -> None:
    f = Feeder()
    f.event(PANEL, 0, "start", system_addr=1, component_addr=5)
    assert f.event(PANEL, 9, "feedback", system_addr=1, component_addr=5) == []
    f.event(PANEL, 20, "start", system_addr=1, component_addr=6)
    assert f.tick(29.9) == []
    [ch] = f.tick(30)
    assert ch.alert.type == "fire.linkage_no_feedback"
    assert ch.payload["evidence"]["components"] == [f"{PANEL}/1/6"]
    assert f.types(f.event(PANEL, 40, "feedback", system_addr=1, component_addr=6)) == [
        "fire.linkage_no_feedback"
    ]
    assert "fire.linkage_no_feedback" not in f.open_types(PANEL)


def test_fire_door_held_open_300_s() -> None:
    f = Feeder()
    f.tel(DOOR, 0, door="open")
    assert f.tick(299.9) == []
    assert f.types(f.tick(300)) == ["fire.door_held_open"]
    assert f.types(f.tel(DOOR, 310, door="closed"), "resolved") == ["fire.door_held_open"]


def test_fire_lane_blocked_300_s_and_clear() -> None:
    f = Feeder()
    f.event(CAM, 0, "fire_lane_blocked")
    f.event(CAM, 100, "fire_lane_clear")
    assert f.tick(400) == []  # cleared in time
    f.event(CAM, 500, "fire_lane_blocked")
    [ch] = f.tick(800)
    assert ch.alert.type == "fire.lane_blocked"
    assert {a["audience"] for a in ch.payload["audiences"]} == {
        "fire",
        "public_security",
        "property",
    }
    assert f.types(f.event(CAM, 900, "fire_lane_clear"), "resolved") == ["fire.lane_blocked"]


def test_ebike_charging_clears_after_30_min_quiet() -> None:
    f = Feeder()
    assert f.types(f.event(CAM, 0, "ebike_charging", zone="corridor")) == ["fire.ebike_charging"]
    f.event(CAM, 600, "ebike_charging", zone="corridor")
    assert f.tick(2399) == []
    assert f.types(f.tick(2400), "resolved") == ["fire.ebike_charging"]


def test_a_resent_fire_event_after_its_reset_raises_nothing() -> None:
    """Found by `anju chaos`: a panel's fire event resent after a backend kill (or a database
    restart) came to the rules after the panel's reset and raised the alarm a second time,
    which then stayed open and hid the panel's next real fire."""
    from dataclasses import replace

    f = Feeder()
    fire = f.rec(PANEL, "e", 0, event_type="fire", data={"system_addr": 1, "component_addr": 12})
    assert f.types(f.feed(fire)) == ["fire.alarm"]
    assert f.types(f.event(PANEL, 2, "reset"), "resolved") == ["fire.alarm"]
    assert f.feed(replace(fire, repeat=True)) == []  # a resend: seen already
    assert "fire.alarm" not in f.open_types(PANEL)
    # the mark survives a restart (it is part of the stored rule state)
    g = Feeder()
    g.engine.restore(f.engine.snapshot(set(f.engine.states)))
    assert g.feed(replace(fire, repeat=True)) == []
    # a resent event the rules never saw is evaluated, and a new one always is
    late = replace(fire, seq=fire.seq + 10, repeat=True, ts=fire.ts + 5_000, rx=fire.rx + 5_000)
    assert g.types(g.feed(late)) == ["fire.alarm"]
