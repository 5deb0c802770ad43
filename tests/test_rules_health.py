"""Device health: battery, clock skew, device and gateway liveness, suppression."""

from __future__ import annotations

from backend.alerting.testing import Feeder

SMOKE, ELEV, PANEL, ACC = (
    "c0-smoke_detector-0",
    "c0-elevator-0",
    "c0-fire_panel-0",
    "c0-access_controller-0",
)


def test_battery_low_below_20_clear_above_30() -> None:
    f = Feeder()
    assert f.tel(SMOKE, 0, battery_pct=20) == []
    [ch] = f.status(SMOKE, 1, battery_pct=19)
    assert ch.alert.type == "device.battery_low"
    assert {a["audience"] for a in ch.payload["audiences"]} == {"fire", "property"}
    assert f.tel(SMOKE, 2, battery_pct=30) == []  # hysteresis: not above 30 yet
    assert f.types(f.tel(SMOKE, 3, battery_pct=31), "resolved") == ["device.battery_low"]


def test_clock_skew_over_5_min_clear_within_1_min() -> None:
    f = Feeder()
    assert f.feed(f.rec(ACC, "t", 0, skew_s=299, metrics={"door": "closed"})) == []
    [ch] = f.feed(f.rec(ACC, "t", 1, skew_s=-301, metrics={"door": "closed"}))
    assert (ch.alert.type, ch.payload["severity"]) == ("device.clock_skew", "info")
    assert f.feed(f.rec(ACC, "t", 2, skew_s=61, metrics={"door": "closed"})) == []
    done = f.feed(f.rec(ACC, "t", 3, skew_s=60, metrics={"door": "closed"}))
    assert f.types(done, "resolved") == ["device.clock_skew"]


def test_device_offline_after_3_intervals_major_for_elevators_minor_otherwise() -> None:
    f = Feeder()
    f.tel(ELEV, 0, floor=1)
    f.tel(ACC, 0, door="closed")
    f.event(PANEL, 0, "normal")

    def heartbeat(t: float) -> None:
        f.engine.gateway_state("gw-c0", True, f.rec(ELEV, "t", t).rx)

    heartbeat(30)
    assert f.types(f.tick(60, liveness=True)) == []
    f.tel(ELEV, 60, floor=1)  # heard again: its 180 s start over
    heartbeat(120)
    raised = {c.alert.type: c for c in f.tick(180, liveness=True)}
    assert raised["device.offline"].alert.device.id == ACC
    assert raised["device.offline"].payload["severity"] == "minor"
    assert raised["fire.transmission_offline"].payload["severity"] == "major"
    heartbeat(200)
    [elev] = f.tick(240, liveness=True)
    assert (elev.alert.device.id, elev.payload["severity"]) == (ELEV, "major")
    assert f.types(f.tel(ELEV, 250, floor=1), "resolved") == ["device.offline"]


def test_dead_gateway_raises_one_alert_and_suppresses_its_devices() -> None:
    f = Feeder()
    for i, dev in enumerate(f.city.gateway_devices("gw-c0")):
        f.tel(dev.id, i / 100, battery_pct=90)
    e = f.engine
    [gw] = e.gateway_state("gw-c0", False, f.rec(ELEV, "t", 1).rx)  # the Last Will
    assert (gw.alert.type, gw.alert.device.id, gw.action) == ("gateway.offline", "gw-c0", "raised")
    assert f.tick(600, liveness=True) == []  # no storm of device.offline
    [back] = e.gateway_state("gw-c0", True, f.rec(ELEV, "t", 601).rx)
    assert back.action == "resolved"
    assert f.tick(680, liveness=True) == []  # devices watched afresh from the return


def test_gateway_without_heartbeat_for_90_s() -> None:
    f = Feeder()
    f.engine.gateway_state("gw-c0", True, f.rec(ELEV, "t", 0).rx)
    assert f.tick(89, liveness=True) == []
    [ch] = f.tick(90.1, liveness=True)
    assert ch.alert.type == "gateway.offline" and ch.payload["evidence"]["reason"] == "no heartbeat"
