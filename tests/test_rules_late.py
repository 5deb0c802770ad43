"""Late events: an event that arrives after a later event of its counterpart (a resend that
overtook what was queued, as the 30-minute chaos run found: a panel's fire whose commit
failed when the leading worker left, resent after the panel's reset had come through, raised
an alarm that stayed open after its own reset and swallowed the panel's next fire).

For every event kind with a clearing event (fire panel: fire/reset, fault and power fault and
supervisory/normal or reset, disabled/enabled, linkage start/feedback per component; camera:
fire lane blocked/clear), in both directions: a late opener is raised and resolved at once (or
nothing if the alert is open again), a late closer does not clear what a later opener raised,
and a late event leaves the device's state (timers) as it was.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from anju.uplink import Record
from backend.alerting.lifecycle import Change
from backend.alerting.testing import Feeder

PANEL, CAM = "c0-fire_panel-0", "c0-camera-0"
COMP = {"system_addr": 1, "component_addr": 12}


def _held_back(f: Feeder, dev: str, t_s: float, etype: str, **data: Any) -> Record:
    """An event the device sent at ``t_s`` that the rules will only see later (its sequence
    number is taken now, in the device's order)."""
    return f.rec(dev, "e", t_s, event_type=etype, data=data)


def _actions(changes: list[Change], alert_type: str) -> list[str]:
    return [c.action for c in changes if c.alert.type == alert_type]


# (opener, closer, alert type) of every fire panel pair with a clear
PANEL_PAIRS = [
    ("fire", "reset", "fire.alarm"),
    ("fault", "normal", "fire.panel_fault"),
    ("fault", "reset", "fire.panel_fault"),
    ("power_fault", "normal", "fire.panel_fault"),
    ("supervisory", "normal", "fire.supervisory"),
    ("supervisory", "reset", "fire.supervisory"),
    ("disabled", "enabled", "fire.panel_disabled"),
]


@pytest.mark.parametrize(("opener", "closer", "atype"), PANEL_PAIRS)
def test_a_late_opener_after_its_closer_is_raised_and_resolved_at_once(
    opener: str, closer: str, atype: str
) -> None:
    f = Feeder()
    late = _held_back(f, PANEL, 0, opener, **COMP)
    assert f.event(PANEL, 2, closer) == []  # nothing open yet
    changes = f.feed(late)
    assert _actions(changes, atype) == ["raised", "resolved"]
    resolved = next(c for c in changes if c.action == "resolved")
    assert closer in resolved.payload["evidence"]["resolution"]
    assert atype not in f.open_types(PANEL)
    # the panel's next opener is raised as a new alert, not folded into a stale one
    assert _actions(f.event(PANEL, 60, opener, **COMP), atype) == ["raised"]
    assert _actions(f.event(PANEL, 62, closer), atype) == ["resolved"]


@pytest.mark.parametrize(("opener", "closer", "atype"), PANEL_PAIRS)
def test_a_late_closer_does_not_clear_what_a_later_opener_raised(
    opener: str, closer: str, atype: str
) -> None:
    # the panel opens (seq 1), closes (seq 2), closes again (seq 3), opens again (seq 4);
    # the first close arrives last
    f2 = Feeder()
    assert _actions(f2.event(PANEL, 0, opener, **COMP), atype) == ["raised"]
    late_close = _held_back(f2, PANEL, 2, closer)
    f2.feed(replace(_held_back(f2, PANEL, 3, closer), seq=late_close.seq + 1))
    assert atype not in f2.open_types(PANEL)
    assert _actions(f2.event(PANEL, 4, opener, **COMP), atype) == ["raised"]
    assert f2.feed(late_close) == []  # about the first alert, not the one open now
    assert atype in f2.open_types(PANEL)


def test_a_late_reset_clears_what_was_raised_before_it_and_keeps_the_later_fire() -> None:
    f = Feeder()
    assert _actions(f.event(PANEL, 0, "fault", **COMP), "fire.panel_fault") == ["raised"]
    late_reset = _held_back(f, PANEL, 5, "reset")
    assert _actions(f.event(PANEL, 6, "fire", **COMP), "fire.alarm") == ["raised"]
    changes = f.feed(late_reset)
    assert _actions(changes, "fire.panel_fault") == ["resolved"]
    assert _actions(changes, "fire.alarm") == []
    assert "fire.alarm" in f.open_types(PANEL)


def test_the_chaos_run_sequence_fire_then_reset_arriving_reversed() -> None:
    """The defect as found: fire (seq n) and reset (seq n+1) arrive reset first; the panel's
    next fire four minutes later must be raised on its own."""
    f = Feeder()
    fire = _held_back(f, PANEL, 0, "fire", **COMP)
    f.event(PANEL, 30, "reset")
    assert _actions(f.feed(fire), "fire.alarm") == ["raised", "resolved"]
    # a resend of the same fire (stored already: a repeat) changes nothing
    assert f.feed(replace(fire, repeat=True)) == []
    assert _actions(f.event(PANEL, 270, "fire", **COMP), "fire.alarm") == ["raised"]
    assert _actions(f.event(PANEL, 300, "reset"), "fire.alarm") == ["resolved"]


def test_a_late_fire_while_a_later_fire_is_open_is_not_raised_again() -> None:
    f = Feeder()
    first = _held_back(f, PANEL, 0, "fire", **COMP)
    f.event(PANEL, 2, "reset")
    assert _actions(f.event(PANEL, 4, "fire", **COMP), "fire.alarm") == ["raised"]
    assert f.feed(first) == []
    assert "fire.alarm" in f.open_types(PANEL)


def test_linkage_late_feedback_keeps_the_later_starts_timer() -> None:
    f = Feeder()
    f.event(PANEL, 0, "start", **COMP)
    late_feedback = _held_back(f, PANEL, 1, "feedback", **COMP)
    f.event(PANEL, 3, "start", **COMP)  # started again; no feedback for this one yet
    f.feed(late_feedback)  # about the first start
    # the second start still waits for its feedback: 10 s later it is an alarm
    assert "fire.linkage_no_feedback" in f.types(f.tick(14))


def test_linkage_late_start_after_its_feedback_raises_nothing_later() -> None:
    f = Feeder()
    late_start = _held_back(f, PANEL, 0, "start", **COMP)
    f.event(PANEL, 1, "feedback", **COMP)
    assert f.feed(late_start) == []
    assert f.tick(30) == []
    assert "fire.linkage_no_feedback" not in f.open_types(PANEL)
    # another component's start is not judged against this one's feedback
    other = {"system_addr": 1, "component_addr": 13}
    late_other = _held_back(f, PANEL, 20, "start", **other)
    f.event(PANEL, 21, "feedback", **COMP)
    f.feed(late_other)
    assert "fire.linkage_no_feedback" in f.types(f.tick(40))


def test_fire_lane_late_blocked_after_clear_starts_no_timer() -> None:
    f = Feeder()
    late_blocked = _held_back(f, CAM, 0, "fire_lane_blocked")
    f.event(CAM, 10, "fire_lane_clear")
    assert f.feed(late_blocked) == []
    assert f.tick(400) == []
    assert "fire.lane_blocked" not in f.open_types(CAM)


def test_fire_lane_late_clear_after_a_later_blocked_keeps_its_timer() -> None:
    f = Feeder()
    f.event(CAM, 0, "fire_lane_blocked")
    late_clear = _held_back(f, CAM, 10, "fire_lane_clear")
    f.event(CAM, 20, "fire_lane_blocked")  # blocked again (the earlier clear is late)
    f.feed(late_clear)
    assert f.types(f.tick(330)) == ["fire.lane_blocked"]


def test_fire_lane_late_blocked_after_clear_when_open_is_not_resolved_twice() -> None:
    f = Feeder()
    f.event(CAM, 0, "fire_lane_blocked")
    assert f.types(f.tick(300)) == ["fire.lane_blocked"]
    late_blocked = _held_back(f, CAM, 301, "fire_lane_blocked")
    assert _actions(f.event(CAM, 400, "fire_lane_clear"), "fire.lane_blocked") == ["resolved"]
    assert f.feed(late_blocked) == []
    assert f.tick(800) == []


def test_across_gateway_boots_device_time_decides() -> None:
    """After a gateway restart its sequence numbers start again under a new boot: an event
    of the old boot resent late is judged by device time."""
    f = Feeder()
    fire = replace(_held_back(f, PANEL, 0, "fire", **COMP), boot_id="b-old", seq=900)
    reset = replace(_held_back(f, PANEL, 5, "reset"), boot_id="b-new", seq=1)
    f.feed(reset)
    assert _actions(f.feed(fire), "fire.alarm") == ["raised", "resolved"]
    # and a new fire of the new boot, later in device time, is an alarm
    fire2 = replace(_held_back(f, PANEL, 60, "fire", **COMP), boot_id="b-new", seq=2)
    assert _actions(f.feed(fire2), "fire.alarm") == ["raised"]


def test_what_a_late_event_saw_survives_a_restart() -> None:
    """The newest counterparts are part of the stored rule state: a worker that takes over
    judges a late event as the one before it would have."""
    f = Feeder()
    fire = _held_back(f, PANEL, 0, "fire", **COMP)
    f.event(PANEL, 30, "reset")
    g = Feeder()
    g.engine.restore(f.engine.snapshot(set(f.engine.states)))
    assert _actions(g.feed(fire), "fire.alarm") == ["raised", "resolved"]


def test_events_without_a_counterpart_are_evaluated_as_before() -> None:
    """A late event of a kind with no clearing event (a call point's alarm, an elevator's
    alarm button) is simply evaluated: the alarm is raised."""
    f = Feeder()
    mcp = "c0-manual_call_point-0"
    late = _held_back(f, mcp, 0, "alarm")
    f.event(mcp, 5, "test")
    assert f.types(f.feed(late)) == ["fire.alarm"]
