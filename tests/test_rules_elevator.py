"""Scenario tests for every elevator alert: what raises it, what must not (just under the
threshold, just too short), what clears it. Pure: a fake clock, no I/O."""

from __future__ import annotations

from backend.alerting.testing import Feeder

E = "c0-elevator-0"
CAM = "c0-camera-0"
IDLE = {
    "moving": False,
    "door": "closed",
    "passenger": False,
    "in_door_zone": True,
    "floor": 5,
    "service_mode": "normal",
    "power": "normal",
}


def test_trapped_raise_just_too_short_and_clear() -> None:
    f = Feeder()
    stuck = {**IDLE, "passenger": True, "in_door_zone": False}
    f.tel(E, 0, **stuck)
    assert f.tel(E, 29.999, **stuck) == []
    assert f.types(f.tel(E, 30, **stuck)) == ["elevator.trapped"]
    assert f.tel(E, 31, door="open") == []  # open out of the door zone: still trapped
    assert f.types(f.tel(E, 40, door="open", in_door_zone=True), "resolved") == ["elevator.trapped"]


def test_alarm_button_alone_is_resolved_by_a_person_only() -> None:
    f = Feeder()
    f.tel(E, 0, **{**IDLE, "moving": True})
    assert f.types(f.event(E, 1, "alarm_button")) == ["elevator.alarm_button"]
    assert f.event(E, 2, "alarm_button") == []  # one open alert per (device, type)
    f.tel(E, 3, **{**IDLE, "door": "open"})
    f.tick(3600)
    assert "elevator.alarm_button" in f.open_types(E)


def test_overtravel_top_by_switch_by_position_and_by_code() -> None:
    f = Feeder()
    f.tel(E, 0, **IDLE)
    assert f.types(f.tel(E, 1, up_limit=True)) == ["elevator.overtravel_top"]
    assert f.tel(E, 2, up_limit=False, in_door_zone=False) == []  # not yet in the zone
    assert f.types(f.tel(E, 3, in_door_zone=True), "resolved") == ["elevator.overtravel_top"]
    # At the top floor (17: 18 floors from -1, no floor 0), moving up out of the zone.
    top = {**IDLE, "floor": 17, "moving": True, "direction": "up", "in_door_zone": False}
    f.tel(E, 10, **top)
    assert f.tel(E, 29.9, **top) == []  # just too short
    assert f.types(f.tel(E, 30, **top)) == ["elevator.overtravel_top"]
    g = Feeder()
    assert g.types(g.event(E, 0, "fault", code="10")) == ["elevator.overtravel_bottom"]
    h = Feeder()
    h.tel(E, 0, **{**IDLE, "floor": -1})
    assert h.types(h.tel(E, 1, down_limit=True)) == ["elevator.overtravel_bottom"]


def test_door_open_moving_needs_two_consecutive_readings() -> None:
    f = Feeder()
    bad = {**IDLE, "moving": True, "door": "open", "in_door_zone": False}
    f.tel(E, 0, **bad)
    assert f.tel(E, 1, **{**bad, "door": "closed"}) == []  # not consecutive
    assert f.tel(E, 2, **bad) == []
    assert f.types(f.tel(E, 3, **bad)) == ["elevator.door_open_moving"]
    assert f.types(f.tel(E, 4, moving=False), "resolved") == ["elevator.door_open_moving"]
    g = Feeder()
    assert g.types(g.event(E, 0, "fault", code="05")) == ["elevator.door_open_moving"]


def test_overspeed_major_then_critical_and_clear_after_60_s() -> None:
    f = Feeder()  # rated 2.0 m/s: major above 2.3, critical above 2.8
    f.tel(E, 0, **{**IDLE, "moving": True, "speed_mps": 2.3})
    assert f.tel(E, 1, speed_mps=2.3) == []  # at the limit, not above
    assert f.tel(E, 2, speed_mps=2.4) == []  # one reading above
    assert f.tel(E, 3, speed_mps=2.0) == []
    f.tel(E, 4, speed_mps=2.4)
    [ch] = f.tel(E, 5, speed_mps=2.5)
    assert (ch.action, ch.payload["severity"]) == ("raised", "major")
    f.tel(E, 6, speed_mps=2.9)
    [up] = f.tel(E, 7, speed_mps=3.0)
    assert (up.action, up.payload["severity"]) == ("updated", "critical")
    assert ("community", "c0") in {(a["audience"], a["scope"]) for a in up.payload["audiences"]}
    f.tel(E, 8, speed_mps=1.0)
    assert f.tel(E, 67.9, speed_mps=1.0) == []
    assert f.types(f.tel(E, 68, speed_mps=1.0), "resolved") == ["elevator.overspeed"]


def test_stopped_outside_door_zone_60_s_or_code_04() -> None:
    f = Feeder()
    out = {**IDLE, "in_door_zone": False}
    f.tel(E, 0, **out)
    assert f.tick(59.9) == []
    assert f.types(f.tick(60)) == ["elevator.stopped_outside_door_zone"]
    assert f.types(f.tel(E, 70, in_door_zone=True), "resolved") == [
        "elevator.stopped_outside_door_zone"
    ]
    g = Feeder()
    assert g.types(g.event(E, 0, "fault", code="04")) == ["elevator.stopped_outside_door_zone"]


def test_power_loss_and_back() -> None:
    f = Feeder()
    f.tel(E, 0, **IDLE)
    assert f.types(f.tel(E, 1, power="outage")) == ["elevator.power_loss"]
    assert f.tel(E, 2, power="outage") == []
    assert f.types(f.tel(E, 3, power="normal"), "resolved") == ["elevator.power_loss"]


def test_fault_codes_and_not_other_codes() -> None:
    f = Feeder()
    assert f.event(E, 0, "fault", code="11") == []
    [ch] = f.event(E, 1, "fault", code="1")
    assert ch.payload["evidence"]["fault_code"] == "01"
    [upd] = f.event(E, 2, "fault", code="07")
    assert upd.action == "updated" and upd.payload["evidence"]["fault_code"] == "07"
    f.tick(10_000)
    assert "elevator.fault" in f.open_types(E)  # a person resolves it


def test_door_held_open_120_s_in_normal_service_only() -> None:
    f = Feeder()
    f.tel(E, 0, **{**IDLE, "door": "open"})
    assert f.tel(E, 119.9, door="open") == []
    assert f.types(f.tel(E, 120, door="open")) == ["elevator.door_held_open"]
    assert f.types(f.tel(E, 121, door="closed"), "resolved") == ["elevator.door_held_open"]
    g = Feeder()
    g.tel(E, 0, **{**IDLE, "door": "open", "service_mode": "inspection"})
    assert g.tick(600) == []


def test_door_cycling_five_in_60_s_and_clear_after_quiet() -> None:
    f = Feeder()
    f.tel(E, 0, **IDLE)
    t = 1.0
    for _ in range(4):  # four cycles: just under
        f.tel(E, t, door="open")
        assert f.tel(E, t + 2, door="closed") == []
        t += 5
    f.tel(E, t, door="open")
    assert f.types(f.tel(E, t + 2, door="closed")) == ["elevator.door_cycling"]
    assert f.tick(t + 61.9) == []
    assert f.types(f.tick(t + 62), "resolved") == ["elevator.door_cycling"]
    g = Feeder()  # five cycles spread over more than 60 s
    g.tel(E, 0, **IDLE)
    for i in range(6):
        g.tel(E, 1 + 15 * i, door="open")
        g.tel(E, 2 + 15 * i, door="closed")
    assert g.changes == []


def test_ebike_in_the_elevator_needs_two_detections_in_5_s() -> None:
    f = Feeder()
    f.event(CAM, 0, "ebike_detected", zone="elevator")
    assert f.event(CAM, 5.1, "ebike_detected", zone="elevator") == []  # too far apart
    assert f.event(CAM, 6, "ebike_detected", zone="corridor") == []  # another zone
    [ch] = f.event(CAM, 9, "ebike_detected", zone="elevator")
    assert (ch.alert.type, ch.alert.device.id) == ("elevator.ebike", E)
    auds = {a["audience"] for a in ch.payload["audiences"]}
    assert auds == {"market_supervision", "maintenance", "property", "fire"}
    assert f.tick(68.9) == []
    assert f.types(f.tick(69.1), "resolved") == ["elevator.ebike"]
