"""Scenario tests for the security and access alerts."""

from __future__ import annotations

from backend.alerting.testing import Feeder

BTN, PER, ACC, CAM, SMOKE = (
    "c0-emergency_button-0",
    "c0-perimeter-0",
    "c0-access_controller-0",
    "c0-camera-0",
    "c0-smoke_detector-0",
)


def test_emergency_button_latches_until_a_person_resolves_it() -> None:
    f = Feeder()
    [ch] = f.event(BTN, 0, "pressed")
    assert (ch.alert.type, ch.payload["severity"]) == ("security.emergency_button", "critical")
    assert {a["audience"] for a in ch.payload["audiences"]} == {
        "public_security",
        "property",
        "community",
    }
    assert f.event(BTN, 1, "reset") == []
    assert f.tick(86_400) == []
    assert "security.emergency_button" in f.open_types(BTN)


def test_perimeter_intrusion_clears_after_10_quiet_minutes() -> None:
    f = Feeder()
    assert f.types(f.event(PER, 0, "intrusion")) == ["security.perimeter_intrusion"]
    f.event(PER, 300, "intrusion")  # the quiet period starts again
    assert f.tick(899) == []
    assert f.types(f.tick(900), "resolved") == ["security.perimeter_intrusion"]
    g = Feeder()
    assert g.types(g.event(CAM, 0, "perimeter_intrusion")) == ["security.perimeter_intrusion"]


def test_object_thrown_and_tamper_wait_for_a_person() -> None:
    f = Feeder()
    assert f.types(f.event(CAM, 0, "object_thrown")) == ["security.object_thrown"]
    assert f.types(f.event(SMOKE, 0, "tamper")) == ["security.tamper"]
    assert f.types(f.event(ACC, 0, "tamper")) == ["security.tamper"]
    f.tick(10_000)
    assert f.engine.book.is_open(SMOKE, "security.tamper")


def test_door_forced_by_event_or_by_opening_without_a_grant() -> None:
    f = Feeder()
    f.tel(ACC, 0, door="closed")
    f.event(ACC, 10, "access_granted")
    assert f.tel(ACC, 20, door="open") == []  # granted 10 s before: fine
    f.tel(ACC, 25, door="closed")
    [ch] = f.tel(ACC, 40, door="open")  # no grant in the 10 s before
    assert ch.alert.type == "access.door_forced"
    assert f.types(f.tel(ACC, 50, door="closed"), "resolved") == ["access.door_forced"]
    assert f.types(f.event(ACC, 60, "door_forced")) == ["access.door_forced"]


def test_duress_is_critical_and_latching() -> None:
    f = Feeder()
    [ch] = f.event(ACC, 0, "duress")
    assert ch.payload["severity"] == "critical"
    f.tick(10_000)
    assert f.engine.book.is_open(ACC, "access.duress")


def test_access_door_held_open_and_tailgating_go_to_property_only() -> None:
    f = Feeder()
    f.tel(ACC, 0, door="closed")
    f.event(ACC, 1, "access_granted")
    f.tel(ACC, 2, door="open")
    assert f.tick(181.9) == []
    [ch] = f.tick(182)
    assert ch.alert.type == "access.door_held_open"
    assert [a["audience"] for a in ch.payload["audiences"]] == ["property"]
    assert f.types(f.tel(ACC, 200, door="closed"), "resolved") == ["access.door_held_open"]
    [tg] = f.event(ACC, 300, "tailgating")
    assert [a["audience"] for a in tg.payload["audiences"]] == ["property"]
    assert f.types(f.tick(900), "resolved") == ["access.tailgating"]
