"""Issue 10, item 4 (pure, no I/O): one bad device timestamp never blinds the rules.

A reading whose device time is more than ``clock_skew_s`` (5 min) away from the gateway's
receive time is evaluated on the receive time, and raises ``device.clock_skew``; the readings
after it are evaluated as usual. A last time that far ahead in a saved state is forgotten.
"""

from __future__ import annotations

import json

from backend.alerting.model import DeviceState
from backend.alerting.testing import Feeder

SMOKE = "c0-smoke_detector-0"
EIGHT_H = 8 * 3600


def test_one_reading_eight_hours_ahead_does_not_blind_the_rules() -> None:
    f = Feeder()
    assert f.tel(SMOKE, 0, smoke=False, battery_pct=90) == []
    # A terminal that once sends local time (UTC+8) as UTC: device time 8 h ahead of rx.
    skewed = f.feed(f.rec(SMOKE, "t", 10 + EIGHT_H, skew_s=-EIGHT_H, metrics={"smoke": False}))
    assert f.types(skewed, "raised") == ["device.clock_skew"]
    # The next readings carry the right time again: evaluated, smoke included.
    fire = f.tel(SMOKE, 20, smoke=True)
    assert "fire.alarm" in f.types(fire, "raised")
    assert f.open_types(SMOKE) >= {"fire.alarm"}


def test_a_skewed_event_is_evaluated_on_the_receive_time() -> None:
    f = Feeder()
    f.tel(SMOKE, 0, smoke=False)
    rec = f.rec(SMOKE, "e", 10 - EIGHT_H, skew_s=EIGHT_H, event_type="alarm", data={})
    assert "fire.alarm" in f.types(f.feed(rec), "raised")


def test_a_saved_state_with_a_time_far_ahead_is_not_kept() -> None:
    f = Feeder()
    f.tel(SMOKE, 0, smoke=False)
    doc = f.engine.snapshot({SMOKE})[SMOKE]
    doc["last_ts"] += EIGHT_H * 1000  # what a backend before this rule saved
    g = Feeder()
    g.engine.restore({SMOKE: json.loads(json.dumps(doc))})
    g.seq = 100
    assert "fire.alarm" in g.types(g.tel(SMOKE, 30, smoke=True), "raised")


def test_clock_skew_clears_when_the_clock_is_right_again() -> None:
    f = Feeder()
    f.tel(SMOKE, 0, smoke=False)
    f.feed(f.rec(SMOKE, "t", 10 + EIGHT_H, skew_s=-EIGHT_H, metrics={"smoke": False}))
    assert "device.clock_skew" in f.open_types(SMOKE)
    assert f.types(f.tel(SMOKE, 20, smoke=False), "resolved") == ["device.clock_skew"]
    st: DeviceState = f.engine.states[SMOKE]
    assert "skew_ms" not in st.mem and st.last_ts < f.rec(SMOKE, "t", 21).rx
