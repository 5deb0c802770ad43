"""The rules elevator.trapped and fire.alarm, on device time, with no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anju.registry import CityIndex, load_registry
from anju.uplink import Record
from backend.alerting import Change, Engine
from backend.alerting.routing import audiences_for

CITY = CityIndex(load_registry(Path(__file__).parent / "data" / "city.yaml"))
T0 = 1_764_122_400_000
ELEV = "jx-nh-0001-elev-03"
SMOKE_A = "jx-nh-0001-smoke-3-1201"
SMOKE_B = "jx-nh-0001-smoke-3-0801"


class Feeder:
    """Feeds records to an engine as the ingest would, with a fake clock."""

    def __init__(self) -> None:
        self.engine = Engine(CITY)
        self.seq = 0
        self.changes: list[Change] = []

    def _rec(self, dev: str, kind: Any, ts: int, **kw: Any) -> list[Change]:
        self.seq += 1
        rec = Record(
            gateway_id="gw", boot_id="b", seq=self.seq, device_id=dev, kind=kind, ts=ts, rx=ts, **kw
        )
        out = self.engine.feed(rec, ts + 5)
        self.changes += out
        return out

    def tel(self, dev: str, t_s: float, **metrics: Any) -> list[Change]:
        return self._rec(dev, "t", T0 + int(t_s * 1000), metrics=metrics)

    def event(self, dev: str, t_s: float, etype: str, **data: Any) -> list[Change]:
        return self._rec(dev, "e", T0 + int(t_s * 1000), event_type=etype, data=data)

    def tick(self, t_s: float) -> list[Change]:
        out = self.engine.tick(T0 + int(t_s * 1000))
        self.changes += out
        return out


STUCK = {"moving": False, "door": "closed", "passenger": True, "in_door_zone": False, "floor": 7}


def test_trapped_raises_after_trap_s_and_not_before() -> None:
    f = Feeder()
    f.tel(ELEV, 0, moving=True, door="closed", passenger=True, in_door_zone=False, floor=6)
    assert f.tel(ELEV, 1, **STUCK) == []
    assert f.tel(ELEV, 30.9, **STUCK) == []  # just too short: 29.9 s
    [ch] = f.tel(ELEV, 31, **STUCK)
    a = ch.payload
    assert (a["type"], a["severity"], a["state"]) == ("elevator.trapped", "critical", "raised")
    assert "between floors" in a["title"]
    assert a["evidence"]["stopped_s"] == 30.0
    assert a["occurred_at"] == "2025-11-26T10:00:01.000+08:00"
    # A persisting condition does not raise a second alert (nor republish it every reading).
    assert f.tel(ELEV, 40, **STUCK) == []
    assert f.tick(90) == []
    assert len(f.engine.book.open) == 1


def test_trapped_timer_fires_on_a_tick_when_the_device_goes_quiet() -> None:
    f = Feeder()
    f.tel(ELEV, 0, **STUCK)
    assert f.tick(29.5) == []
    [ch] = f.tick(30.25)
    assert ch.action == "raised" and ch.alert.type == "elevator.trapped"


def test_trapped_is_reset_by_moving_and_cleared_by_door_open_in_zone() -> None:
    f = Feeder()
    f.tel(ELEV, 0, **STUCK)
    f.tel(ELEV, 20, **{**STUCK, "moving": True})  # moved on: the timer starts again
    assert f.tel(ELEV, 35, **STUCK) == []
    assert f.tel(ELEV, 64, **STUCK) == []
    [raised] = f.tel(ELEV, 65, **STUCK)
    assert raised.action == "raised"
    # Door opening outside the door zone does not clear it.
    assert f.tel(ELEV, 70, door="open") == []
    [cleared] = f.tel(ELEV, 80, door="open", in_door_zone=True)
    assert cleared.action == "resolved" and cleared.payload["state"] == "resolved"


def test_no_passenger_or_open_door_is_not_trapped() -> None:
    f = Feeder()
    f.tel(ELEV, 0, **{**STUCK, "passenger": False})
    f.tel(ELEV, 60, **{**STUCK, "passenger": False})
    f.tel(ELEV, 61, **{**STUCK, "door": "open"})
    f.tel(ELEV, 100, **{**STUCK, "door": "open"})
    # (an empty car stopped out of the door zone is another alert, not trapped)
    assert [c for c in f.changes if c.alert.type == "elevator.trapped"] == []


def test_alarm_button_with_passenger_in_stopped_car_raises_at_once() -> None:
    f = Feeder()
    f.tel(ELEV, 0, **STUCK)
    [ch] = f.event(ELEV, 3, "alarm_button")
    assert ch.alert.type == "elevator.trapped" and ch.payload["evidence"]["alarm_button"]
    f2 = Feeder()
    f2.tel(ELEV, 0, **{**STUCK, "moving": True})
    # A moving car: not trapped, but the button itself is an alert (elevator.alarm_button).
    assert [c.alert.type for c in f2.event(ELEV, 3, "alarm_button")] == ["elevator.alarm_button"]


def test_trap_s_comes_from_the_registry_params() -> None:
    dev = CITY.devices[ELEV]
    object.__setattr__(dev, "params", {**dev.params, "trap_s": 20})
    try:
        f = Feeder()
        f.tel(ELEV, 0, **STUCK)
        assert [c.action for c in f.tel(ELEV, 20, **STUCK)] == ["raised"]
    finally:
        object.__setattr__(dev, "params", {k: v for k, v in dev.params.items() if k != "trap_s"})


def test_fire_alarm_raises_on_the_first_trigger_and_confirms_on_the_second() -> None:
    f = Feeder()
    [first] = f.event(SMOKE_A, 0, "alarm")
    assert first.action == "raised"
    assert first.payload["evidence"]["confirmed"] is False
    assert first.payload["severity"] == "critical"
    # The same detector again is not an independent trigger.
    assert all(c.alert.device.id == SMOKE_A for c in f.event(SMOKE_A, 10, "alarm"))
    changes = f.event(SMOKE_B, 60, "alarm")
    by_dev = {c.alert.device.id: c for c in changes}
    assert by_dev[SMOKE_B].action == "raised"
    assert by_dev[SMOKE_B].payload["evidence"]["confirmed"] is True
    assert by_dev[SMOKE_A].action == "updated"
    assert by_dev[SMOKE_A].payload["evidence"]["confirmed"] is True


def test_fire_triggers_more_than_120_s_apart_do_not_confirm() -> None:
    f = Feeder()
    f.event(SMOKE_A, 0, "alarm")
    [ch] = f.event(SMOKE_B, 121, "alarm")
    assert ch.payload["evidence"]["confirmed"] is False


def test_smoke_metric_rising_edge_is_a_trigger_and_test_event_is_not() -> None:
    f = Feeder()
    assert f.event(SMOKE_A, 0, "test") == []
    f.tel(SMOKE_A, 1, smoke=False)
    [ch] = f.tel(SMOKE_A, 2, smoke=True)
    assert ch.action == "raised"
    assert f.tel(SMOKE_A, 3, smoke=True) == []


def test_routing_of_the_two_alerts() -> None:
    from anju.contract import Severity

    elev = audiences_for("elevator.trapped", Severity.CRITICAL, CITY.devices[ELEV])
    assert [(str(a), s) for a, s in elev] == [
        ("market_supervision", "330402"),
        ("maintenance", "org-otis-jx"),
        ("property", "org-greentown-jx"),
        ("community", "jx-nh-0001"),
    ]
    fire = audiences_for("fire.alarm", Severity.CRITICAL, CITY.devices["jx-xz-0001-smoke-2-0101"])
    assert [(str(a), s) for a, s in fire] == [
        ("fire", "330411"),
        ("property", "org-vanke-jx"),
        ("community", "jx-xz-0001"),
    ]


def test_a_repeated_trigger_from_the_same_detector_is_not_republished() -> None:
    f = Feeder()
    f.event(SMOKE_A, 0, "alarm")
    assert f.tel(SMOKE_A, 1, smoke=True) == []
    assert f.event(SMOKE_A, 5, "alarm") == []
