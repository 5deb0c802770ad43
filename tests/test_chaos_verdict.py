"""The chaos verdict over crafted data: each check fails when its guarantee is broken (a
duplicate row, a missing reading, an alarm late, twice, to the wrong audience or never
cleared, an outbox not drained, a process left behind) and passes when it holds."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

from anju.chaos import verdict as v
from anju.chaos.run import PROFILES, schedule

CN = timezone(timedelta(hours=8))
T0 = 1_764_122_400_000
AUDS = frozenset({("fire", "330402"), ("property", "org-prop-01"), ("community", "jx-nh-0001")})
PANEL = "jx-nh-0001-panel-01"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(CN).isoformat(timespec="milliseconds")


def msg(
    aud: tuple[str, str],
    recv: int,
    state: str = "raised",
    alert_id: str = "a1",
    updated: int | None = None,
    ts: int = T0,
) -> v.Received:
    raised = ts + 50
    return v.Received(
        aud,
        {
            "id": alert_id,
            "type": "fire.alarm",
            "state": state,
            "device_id": PANEL,
            "occurred_at": iso(ts),
            "raised_at": iso(raised),
            "updated_at": iso(updated if updated is not None else raised),
        },
        recv,
    )


def good_messages() -> list[v.Received]:
    out = [msg(a, T0 + 80) for a in sorted(AUDS)]
    out += [msg(a, T0 + 2100, "cleared", updated=T0 + 2050) for a in sorted(AUDS)]
    return out


ALARM = v.Alarm(PANEL, T0, AUDS, cleared=True)


def test_readings_pass_when_each_is_stored_once() -> None:
    acked = [("d1", 1), ("d1", 2), ("d2", 1)]
    st = v.readings_stored_once(acked, [("d1", 1), ("d1", 2), ("d2", 1), ("d2", 2)])
    assert (st.lost, st.duplicates, st.expected) == ([], [], 3)
    assert v.decide(st, [], {}, [])[0].ok


def test_a_duplicate_row_fails() -> None:
    st = v.readings_stored_once([("d1", 1), ("d1", 2)], [("d1", 1), ("d1", 2), ("d1", 2)])
    assert st.duplicates == [("d1", 2)]
    check = v.decide(st, [], {}, [])[0]
    assert not check.ok and "1 stored twice" in check.detail


def test_a_missing_reading_fails() -> None:
    st = v.readings_stored_once([("d1", 1), ("d1", 2)], [("d1", 1)])
    assert st.lost == [("d1", 2)]
    check = v.decide(st, [], {}, [])[0]
    assert not check.ok and "1 lost" in check.detail


def test_no_reading_at_all_is_not_a_pass() -> None:
    assert not v.decide(v.readings_stored_once([], []), [], {}, [])[0].ok


def test_an_alarm_once_to_its_audiences_passes() -> None:
    [r] = v.alarms_once([ALARM], good_messages())
    assert r.problems == []
    assert r.latency_ms == dict.fromkeys(AUDS, 80)
    # An MQTT redelivery of the very same publication is not a second raise.
    [r] = v.alarms_once([ALARM], [*good_messages(), msg(("fire", "330402"), T0 + 900)])
    assert r.problems == []
    # A later update of the same alert (confirmed by a second trigger) is not either.
    upd = msg(("fire", "330402"), T0 + 5000, updated=T0 + 4000)
    assert v.alarms_once([ALARM], [*good_messages(), upd])[0].problems == []


def test_an_alarm_raised_twice_fails() -> None:
    twice = msg(("fire", "330402"), T0 + 300, alert_id="a2")
    [r] = v.alarms_once([ALARM], [*good_messages(), twice])
    assert any("2 alerts for one alarm" in p for p in r.problems)
    assert any("raised 2 times to fire/330402" in p for p in r.problems)
    checks = v.decide(v.readings_stored_once([("d", 1)], [("d", 1)]), [r], {}, [])
    assert not checks[1].ok


def test_an_alarm_missing_for_one_audience_fails() -> None:
    msgs = [m for m in good_messages() if m.audience != ("community", "jx-nh-0001")]
    [r] = v.alarms_once([ALARM], msgs)
    assert "raised 0 times to community/jx-nh-0001" in " ".join(r.problems)


def test_an_alarm_to_a_wrong_audience_fails() -> None:
    stray = msg(("fire", "330411"), T0 + 90)
    [r] = v.alarms_once([ALARM], [*good_messages(), stray])
    assert any("reached fire/330411" in p for p in r.problems)


def test_a_late_alarm_fails_in_calm_but_not_under_an_uplink_cut() -> None:
    late = [msg(a, T0 + v.LATE_MS + 1) for a in sorted(AUDS)]
    late += [m for m in good_messages() if m.payload["state"] == "cleared"]
    [r] = v.alarms_once([ALARM], late)
    assert any("late" in p for p in r.problems)
    cut = v.Fault("uplink_cut", "all", T0 - 1000, T0 + 60_000)
    [r] = v.alarms_once([ALARM], late, [cut])
    assert r.problems == [] and r.under == "uplink_cut"


def test_an_alarm_never_cleared_fails() -> None:
    msgs = [m for m in good_messages() if m.payload["state"] == "raised"]
    [r] = v.alarms_once([ALARM], msgs)
    assert sum("never cleared" in p for p in r.problems) == 3


def test_outboxes_and_processes() -> None:
    st = v.readings_stored_once([("d", 1)], [("d", 1)])
    checks = v.decide(st, [], {"gw-a": 0, "gw-b": 12}, ["4242"])
    assert not checks[2].ok and "gw-b: 12" in checks[2].detail
    assert not checks[3].ok and "4242" in checks[3].detail
    assert all(c.ok for c in v.decide(st, v.alarms_once([ALARM], good_messages()), {}, [])[2:])


def test_latency_split_by_fault_window() -> None:
    faults = [v.Fault("db_restart", "pg", 10_000, 20_000)]
    samples = [(1_000, 50), (2_000, 70), (15_000, 900), (24_000, 400), (60_000, 60)]
    lat = v.latency_split(samples, faults)
    assert lat["all"]["n"] == 5 and lat["all"]["max_ms"] == 900
    assert lat["calm"]["n"] == 3 and lat["calm"]["p50_ms"] == 60
    assert lat["db_restart"]["n"] == 2  # 24 s is inside the 5 s grace after the restart
    assert math.isnan(v.percentile([], 0.5))


def test_the_schedule_is_seeded_and_covers_every_fault() -> None:
    prof = PROFILES["short"]
    a = schedule(("x", "y", "z"), 2, 7, prof)
    assert a == schedule(("x", "y", "z"), 2, 7, prof)
    assert a != schedule(("x", "y", "z"), 2, 8, prof)
    assert {s.kind for s in a} == {"x", "y", "z"}
    assert all(s.at_s + s.hold_s < 120 for s in a)
    assert [s.at_s for s in a] == sorted(s.at_s for s in a)


def test_alarms_behind_a_replay_storm_fail_their_check() -> None:
    faults = [
        v.Fault("uplink_cut", "all", 10_000, 30_000),
        v.Fault("replay_storm", "10 alarms", 30_000, 34_000),
    ]
    fast = [(30_100 + i * 300, 40 + i) for i in range(10)]
    lat = v.latency_split(fast, faults)
    assert lat["replay_storm"]["n"] == 10 and v.storm_alarms(lat).ok
    slow = [*fast, (31_000, 2_400)]  # one alarm queued behind the telemetry
    assert not v.storm_alarms(v.latency_split(slow, faults)).ok
    queued = v.storm_alarms(v.latency_split([(t, lat + 300) for t, lat in fast], faults))
    assert queued.ok and "MISSED" in queued.detail  # the median's target: shown, not failed
    assert not v.storm_alarms(v.latency_split([], faults)).ok  # no alarm: not proven


def test_an_alert_raised_or_cleared_by_a_clock_jump_fails_its_check() -> None:
    jump = v.Fault("clock_jump", "gw-a", 10_000, 20_000)
    mine = {"gw-a": {"dev-1", PANEL}}

    def alert(kind: str, recv: int, occurred: int, dev: str = "dev-1") -> v.Received:
        p = {"type": kind, "state": "raised", "device_id": dev, "occurred_at": iso(occurred)}
        return v.Received(("*", "*"), p, recv)

    fine = [
        alert("fire.smoke", 12_000, 11_990),  # an ordinary alert during the jump
        alert("device.clock_skew", 40_000, 39_000),  # long after it
        alert("device.clock_skew", 12_000, 11_000, dev="dev-elsewhere"),  # another gateway's
    ]
    assert v.clock_jumps_harmless(fine, [jump], mine).ok
    assert not v.clock_jumps_harmless([], [], mine).ok  # no jump: not proven
    skew = alert("device.clock_skew", 12_000, 11_900)
    assert not v.clock_jumps_harmless([*fine, skew], [jump], mine).ok
    # The tail of the fault before (a broker restart): every gateway offline, the jumped too.
    tail = [
        alert("gateway.offline", 13_000, 12_900, dev="gw-a"),
        alert("gateway.offline", 13_000, 12_900, dev="gw-b"),
    ]
    assert v.clock_jumps_harmless(fine + tail, [jump], {**mine, "gw-b": {"dev-2"}}).ok
    assert not v.clock_jumps_harmless(fine + tail[:1], [jump], {**mine, "gw-b": {"dev-2"}}).ok
    late = alert("fire.alarm", 16_000, 16_000 - 7_200_000, dev=PANEL)  # the jumped clock's time
    check = v.clock_jumps_harmless([*fine, late], [jump], mine)
    assert not check.ok and "fire.alarm" in check.detail
