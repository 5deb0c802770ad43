"""The shared behaviour: acknowledgement per audience, escalation, flapping, storm summaries,
latching alarms, and rule state that survives a restart (snapshot and restore). Pure."""

from __future__ import annotations

import json

import pytest

from anju.contract import Audience
from backend.alerting.engine import Engine, Shared
from backend.alerting.errors import NotAnAudience
from backend.alerting.lifecycle import AlertBook, Change, Deadlines
from backend.alerting.testing import T0, Feeder, sample_city

ELEV, SMOKE, BTN = "c0-elevator-0", "c0-smoke_detector-0", "c0-emergency_button-0"
STUCK = {"moving": False, "door": "closed", "passenger": True, "in_door_zone": True}


def escalations(f: Feeder, t_s: float) -> list[Change]:
    return f.engine.book.escalations(T0 + int(t_s * 1000) + 5, f.engine.shared.deadlines)


def test_each_audience_acknowledges_on_its_own() -> None:
    f = Feeder()
    [ch] = f.event(SMOKE, 0, "alarm")
    book, alert = f.engine.book, ch.alert
    with pytest.raises(NotAnAudience):
        book.acknowledge(alert, Audience.MARKET_SUPERVISION, by="x", note="", now_ms=T0)
    a1 = book.acknowledge(alert, Audience.FIRE, by="119 desk", note="on our way", now_ms=T0 + 1)
    assert a1 is not None and a1.payload["state"] == "acknowledged"
    assert book.acknowledge(alert, Audience.FIRE, by="again", note="", now_ms=T0 + 2) is None
    a2 = book.acknowledge(alert, Audience.PROPERTY, by="control room", note="", now_ms=T0 + 3)
    assert a2 is not None
    assert [a["audience"] for a in a2.payload["acks"]] == ["fire", "property"]


def test_a_change_keeps_the_alert_as_it_was_when_made() -> None:
    """Changes wait to be stored on another thread while the alert changes on (an
    acknowledgement through the API): each keeps its own copy."""
    f = Feeder()
    [raised] = f.event(SMOKE, 0, "alarm")
    before = json.dumps(raised.payload, sort_keys=True)
    acked = f.engine.book.acknowledge(
        raised.alert, Audience.FIRE, by="119 desk", note="", now_ms=T0 + 10
    )
    assert acked is not None
    assert json.dumps(raised.payload, sort_keys=True) == before
    assert raised.payload["acks"] == [] and raised.row.state == "raised"
    assert raised.row.updated_at < T0 + 10
    assert acked.row.state == "acknowledged" and acked.row.updated_at == T0 + 10
    assert [a["audience"] for a in acked.payload["acks"]] == ["fire"]


def test_escalation_after_the_deadline_unless_property_acknowledged() -> None:
    f = Feeder(shared=Shared(deadlines=Deadlines(default_ms=300_000, fire_ms=180_000)))
    [fire] = f.event(SMOKE, 0, "alarm")
    f.event("c0-heat_detector-1", 0, "alarm")
    f.engine.book.acknowledge(
        f.engine.book.by_id[f.changes[-1].alert.id], Audience.PROPERTY, by="p", note="", now_ms=T0
    )
    # The fire brigade's acknowledgement does not stop escalation: property's does.
    f.engine.book.acknowledge(fire.alert, Audience.FIRE, by="f", note="", now_ms=T0)
    assert escalations(f, 179.9) == []
    [esc] = escalations(f, 180)
    assert (esc.action, esc.payload["state"], esc.alert.id) == (
        "escalated",
        "escalated",
        fire.alert.id,
    )
    auds = {(a["audience"], a["scope"]) for a in esc.payload["audiences"]}
    assert {("construction", "330402"), ("community", "c0")} <= auds
    assert escalations(f, 400) == []  # escalated once


def test_critical_elevator_deadline_is_5_min_and_minor_alerts_never_escalate() -> None:
    f = Feeder()
    f.event(ELEV, 0, "alarm_button")
    f.tel(SMOKE, 0, battery_pct=5)
    assert escalations(f, 299) == []
    assert f.types(escalations(f, 300)) == ["elevator.alarm_button"]


def test_flapping_alert_is_held_open_then_resolved_when_quiet() -> None:
    f = Feeder()
    t = 0.0
    for _ in range(5):  # five full cycles: raised and resolved each time
        f.tel(ELEV, t, power="outage")
        f.tel(ELEV, t + 10, power="normal")
        t += 60
    assert f.types(f.changes).count("elevator.power_loss") == 10
    f.tel(ELEV, t, power="outage")
    [held] = f.tel(ELEV, t + 10, power="normal")  # the sixth clear in 10 minutes
    assert held.action == "updated" and held.payload["evidence"]["flapping"] is True
    n = len(f.changes)
    f.tel(ELEV, t + 20, power="outage")  # raised again while held: not a new alert
    f.tel(ELEV, t + 30, power="normal")
    assert all(c.action == "updated" for c in f.changes[n:])
    assert f.engine.book.is_open(ELEV, "elevator.power_loss")
    assert f.tick(t + 30 + 599) == []
    [done] = f.tick(t + 30 + 600)
    assert done.action == "resolved"


def test_storm_of_more_than_20_alerts_is_summarised() -> None:
    city = sample_city(per_kind=30)
    f = Feeder(city)
    out = []
    for i in range(25):
        out += f.event(f"c0-emergency_button-{i}", i / 10, "pressed")
    raised = [c for c in out if c.action == "raised"]
    assert len(raised) == 21  # twenty individual alerts, then one summary
    summary = raised[-1]
    assert summary.alert.device.kind == "community" and summary.alert.device.id == "c0"
    assert summary.payload["evidence"]["count"] == 21
    assert summary.payload["type"] == "security.emergency_button"
    assert [c.action for c in out[21:]] == ["updated"] * 4
    assert out[-1].payload["evidence"]["count"] == 25
    assert len(out[-1].payload["evidence"]["devices"]) == 25


def test_storm_summary_resolves_when_its_members_clear() -> None:
    city = sample_city(per_kind=30)
    f = Feeder(city)
    for i in range(23):
        f.tel(f"c0-elevator-{i}", i / 10, power="outage")
    [summary] = [
        c for c in f.changes if c.alert.device.kind == "community" and c.action == "raised"
    ]
    for i in (20, 21):
        f.tel(f"c0-elevator-{i}", 10, power="normal")
    assert f.engine.book.is_open("c0", "elevator.power_loss")
    [done] = f.tel("c0-elevator-22", 11, power="normal")
    assert done.action == "resolved" and done.alert.id == summary.alert.id


def test_latching_alarm_is_never_cleared_by_rules_but_a_person_can() -> None:
    f = Feeder()
    [ch] = f.event(BTN, 0, "pressed")
    f.event(BTN, 1, "reset")
    assert f.engine.book.is_open(BTN, "security.emergency_button")
    done = f.engine.book.resolve(ch.alert, T0 + 5000, by="guard", note="checked")
    f.engine.note(done)
    assert f.types(f.event(BTN, 10, "pressed")) == ["security.emergency_button"]


def test_a_running_timer_survives_a_restart() -> None:
    f = Feeder()
    f.tel(ELEV, 0, **STUCK)
    f.tel(ELEV, 20, **STUCK)
    docs = json.loads(json.dumps(f.engine.snapshot(set(f.engine.states))))
    # A new engine, as after a restart: same open alerts (none), states from the snapshot.
    g = Feeder()
    g.engine = Engine(g.city, AlertBook())
    g.engine.restore(docs)
    assert g.tick(29.9) == []
    assert g.types(g.tick(30)) == ["elevator.trapped"]


def test_deployment_params_apply_under_the_registry_params() -> None:
    f = Feeder(params={"elevator": {"trap_s": 20}})
    f.tel(ELEV, 0, **STUCK)
    assert f.types(f.tick(20)) == ["elevator.trapped"]
