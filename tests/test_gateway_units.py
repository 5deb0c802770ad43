"""Gateway pieces without a broker: input validation, the outbox, the uplink format."""

from __future__ import annotations

import json
import random
import socket
import stat
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anju import canonical
from anju.backoff import decorrelated
from anju.canonical import InputError
from anju.errors import ConfigError
from anju.uplink import (
    COMPRESSED,
    UplinkDecodeError,
    compress_batch,
    decode_ack,
    decode_batch,
    encode_ack,
    encode_batch,
    record_body,
    up_topic,
)
from gateway.config import GatewayConfig, OutboxConfig, load_gateway_config
from gateway.link import parse_ack, reconnect_delays
from gateway.metrics import GatewayMetrics
from gateway.outbox import EVENTS, TELEMETRY, ClockStamp, Incoming, Outbox, read_depth
from gateway.remote import (
    RemoteRequest,
    RemoteResult,
    changed_keys,
    merge,
    parse_remote,
    save_config,
)
from gateway.remote import allowed as allowed_key
from gateway.sdnotify import Notifier
from gateway.sender import Sender
from gateway.status import format_status, gather_status, write_status
from gateway.validate import Accepted, Rejected, decode_device_message

KNOWN = {"elev-1", "smoke-1"}
RX = 1_764_122_400_500


def decode(topic: str, payload: bytes | str) -> list[Accepted | Rejected]:
    raw = payload.encode() if isinstance(payload, str) else payload
    return decode_device_message(topic, raw, known=KNOWN, rx_ms=RX)


def reasons(items: list[Accepted | Rejected]) -> list[str]:
    return [i.reason if isinstance(i, Rejected) else "ok" for i in items]


def test_valid_telemetry_event_status() -> None:
    [t] = decode("anju/dev/elev-1/telemetry", '{"ts": 1764122400123, "metrics": {"floor": 5}}')
    assert isinstance(t, Accepted) and t.payload == {"m": {"floor": 5}} and not t.gateway_timed
    [e] = decode("anju/dev/smoke-1/event", '{"ts": 1764122400123, "type": "alarm", "data": {}}')
    assert isinstance(e, Accepted) and e.kind == "e" and e.payload == {"e": "alarm", "x": {}}
    [s] = decode("anju/dev/smoke-1/status", '{"online": true, "fw": "1.4.2", "battery_pct": 87}')
    assert isinstance(s, Accepted) and s.payload["s"]["battery_pct"] == 87


def test_missing_ts_is_gateway_timed() -> None:
    [t] = decode("anju/dev/elev-1/telemetry", '{"metrics": {"door": "closed"}}')
    assert isinstance(t, Accepted) and t.ts == RX and t.gateway_timed


def test_array_keeps_good_items_and_rejects_bad_ones() -> None:
    payload = json.dumps(
        [
            {"ts": 1764122400123, "metrics": {"floor": 5}},
            {"ts": 1764122400124, "metrics": {"floor": {"nested": 1}}},
            {"ts": 1764122400125, "metrics": {"Bad-Name": 1}},
            {"ts": 1764122400126, "metrics": {"door": "x" * 65}},
            {"ts": 1764122400127, "metrics": {"door": "open"}},
        ]
    )
    assert reasons(decode("anju/dev/elev-1/telemetry", payload)) == [
        "ok",
        "bad_metric",
        "bad_metric",
        "bad_metric",
        "ok",
    ]


def test_garbage_is_rejected_with_a_reason() -> None:
    cases = {
        ("anju/dev/elev-1/telemetry", "{not json"): "bad_json",
        ("anju/dev/elev-1/telemetry", '{"metrics": {"speed_mps": NaN}}'): "bad_number",
        ("anju/dev/elev-1/telemetry", '{"metrics": {"x": 1e999}}'): "bad_number",
        ("anju/dev/elev-1/telemetry", '{"ts": "yesterday", "metrics": {}}'): "bad_ts",
        ("anju/dev/elev-1/telemetry", "[1]"): "bad_shape",
        ("anju/dev/elev-1/event", '{"type": "Bad Type"}'): "bad_event",
        ("anju/dev/nobody/telemetry", '{"metrics": {}}'): "unknown_device",
        ("anju/dev/elev-1/other", "{}"): "bad_topic",
        ("anju/dev/elev-1/status", '{"online": "yes"}'): "bad_shape",
    }
    for (topic, payload), reason in cases.items():
        assert reasons(decode(topic, payload)) == [reason], (topic, payload)
    assert reasons(decode("anju/dev/elev-1/telemetry", b"\xff\xfe")) == ["bad_json"]
    big = '{"metrics": {"a": "' + "x" * (64 * 1024) + '"}}'
    assert reasons(decode("anju/dev/elev-1/telemetry", big)) == ["too_large"]


@given(st.binary(max_size=512), st.sampled_from(["telemetry", "event", "status"]))
def test_any_bytes_never_crash_the_decoder(payload: bytes, channel: str) -> None:
    for item in decode(f"anju/dev/elev-1/{channel}", payload):
        assert isinstance(item, Accepted | Rejected)


metric_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=64),
)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,47}", fullmatch=True), metric_values))
def test_valid_metrics_survive_the_round_trip_to_the_backend(metrics: dict[str, object]) -> None:
    payload = json.dumps({"ts": 1764122400123, "metrics": metrics}).encode()
    [item] = decode("anju/dev/elev-1/telemetry", payload)
    assert isinstance(item, Accepted)
    body = record_body(
        device_id=item.device_id,
        kind=item.kind,
        ts=item.ts,
        rx=RX,
        gateway_timed=item.gateway_timed,
        payload=item.payload,
    )
    gw, [rec] = decode_batch(up_topic("gw-1"), encode_batch("gw-1", [(7, "boot-1", body)]))
    assert (gw, rec.seq, rec.boot_id, rec.device_id, rec.ts) == (
        "gw-1",
        7,
        "boot-1",
        "elev-1",
        1764122400123,
    )
    assert rec.metrics == canonical.clean(metrics)  # strings in canonical form


def test_decode_batch_rejects_impersonation_and_garbage() -> None:
    body = record_body(device_id="d", kind="t", ts=1, rx=1, gateway_timed=False, payload={"m": {}})
    batch = encode_batch("gw-1", [(1, "b", body)])
    for topic, payload, reason in [
        (up_topic("gw-2"), batch, "gateway_mismatch"),
        ("anju/gw/x/y", batch, "bad_topic"),
        (up_topic("gw-1"), b"\x00", "bad_json"),
        (up_topic("gw-1"), b'{"v": 2}', "bad_batch"),
    ]:
        try:
            decode_batch(topic, payload)
        except UplinkDecodeError as exc:
            assert exc.reason == reason
        else:
            raise AssertionError(f"accepted {payload!r} on {topic}")


def test_outbox_lanes_confirm_and_restart(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    t = ob.append("b", [(TELEMETRY, '{"n":1}'), (TELEMETRY, '{"n":2}')], 1000).seqs
    e = ob.append("b", [(EVENTS, '{"n":3}')], 1001).seqs
    assert [r[0] for r in ob.read(EVENTS, 0, 10)] == e
    assert [r[0] for r in ob.read(TELEMETRY, t[0], 10)] == [t[1]]
    assert [r[0] for r in ob.read_seqs([t[1], e[0], 999])] == [e[0], t[1]]  # events first
    assert ob.confirm([e[0], t[0], 999]) == 2
    d = ob.depth()
    assert (d.events, d.telemetry, d.oldest_created_ms) == (0, 1, 1000)
    ob.close()
    # Survives a restart; sequence numbers are never reused.
    ob2 = Outbox(tmp_path / "o.sqlite3")
    assert (ob2.depth().events, ob2.depth().telemetry) == (0, 1)
    [(seq, _b, body)] = ob2.read(TELEMETRY, 0, 10)
    assert (seq, body) == (t[1], '{"n":2}')
    ob2.confirm([seq])
    [new] = ob2.append("b2", [(EVENTS, "{}")], 31_000).seqs
    assert new > seq
    ob2.close()


# ---- time ---------------------------------------------------------------------------------


def test_impossible_device_time_is_flagged_not_stored_as_1970() -> None:
    [t] = decode("anju/dev/elev-1/telemetry", '{"ts": 12, "metrics": {"floor": 1}}')
    assert isinstance(t, Accepted)
    assert (t.ts, t.gateway_timed, t.time_flag) == (RX, True, "device_clock")
    future = RX + 2 * 86_400_000
    [f] = decode("anju/dev/elev-1/telemetry", f'{{"ts": {future}, "metrics": {{}}}}')
    assert isinstance(f, Accepted) and f.time_flag == "device_clock" and f.ts == RX
    # With the gateway's own clock untrusted, a future device time cannot be judged.
    [g] = decode_device_message(
        "anju/dev/elev-1/telemetry",
        f'{{"ts": {future}, "metrics": {{}}}}'.encode(),
        known=KNOWN,
        rx_ms=RX,
        clock_trusted=False,
    )
    assert isinstance(g, Accepted) and g.time_flag is None and g.ts == future


def test_restamp_corrects_times_recorded_before_the_clock_was_set(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    # The Pi booted believing it was 1970 + 100 s; monotonic 5 s: offset 95 s.
    wrong = ClockStamp(trusted=False, kernel_boot="k1", offset_ms=95_000)
    gt = record_body(
        device_id="d", kind="t", ts=100_000, rx=100_000, gateway_timed=True, payload={"m": {"x": 1}}
    )
    dev = record_body(
        device_id="d", kind="t", ts=RX, rx=100_000, gateway_timed=False, payload={"m": {"x": 2}}
    )
    ob.append("b", [(TELEMETRY, gt), (TELEMETRY, dev)], 100_000, wrong)
    other = ClockStamp(trusted=False, kernel_boot="k0", offset_ms=1)
    ob.append("b", [(TELEMETRY, gt)], 100_000, other)
    assert ob.has_untimed()
    # NTP sets the clock: now wall - monotonic = RX.
    assert ob.restamp("k1", RX) == 2
    rows = ob.read(TELEMETRY, 0, 10)
    first, second, third = (json.loads(r[2]) for r in rows)
    assert (first["ts"], first["rx"]) == (100_000 + RX - 95_000,) * 2
    assert (second["ts"], second["rx"]) == (RX, 100_000 + RX - 95_000)
    # A record from an earlier kernel boot cannot be corrected: it goes, flagged.
    assert ob.has_untimed() and ob.release_untimed() == 1 and not ob.has_untimed()
    third = json.loads(ob.read(TELEMETRY, 0, 10)[2][2])
    assert "tq" not in first and third["tq"] == "gateway_clock"
    _gw, recs = decode_batch(up_topic("g"), encode_batch("g", rows[:1]))
    assert recs[0].time_flag is None
    _gw, recs = decode_batch(up_topic("g"), encode_batch("g", ob.read(TELEMETRY, 0, 10)[2:]))
    assert recs[0].time_flag == "gateway_clock"
    ob.close()


# ---- the outbox ---------------------------------------------------------------------------


def test_full_outbox_drops_oldest_telemetry_never_events(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3", max_bytes=1024 * 1024)
    body = '{"d":"d","k":"t","ts":1,"rx":1,"m":{"pad":"' + "x" * 200 + '"}}'
    event = '{"d":"d","k":"e","ts":1,"rx":1,"e":"alarm","x":{"pad":"' + "y" * 200 + '"}}'
    first_events = ob.append("b", [(EVENTS, event)] * 100, 1).seqs
    dropped = 0
    for _ in range(40):
        dropped += ob.append("b", [(TELEMETRY, body)] * 500, 2).dropped
    d = ob.depth()
    assert dropped > 0 and d.dropped_telemetry == dropped
    assert d.events == 100 and d.telemetry == 20_000 - dropped
    assert ob.used_bytes() <= 1024 * 1024
    # The oldest telemetry went; every event is still there.
    assert [r[0] for r in ob.read(EVENTS, 0, 1000)] == first_events
    oldest_left = ob.read(TELEMETRY, 0, 1)[0][0]
    assert oldest_left > first_events[-1] + dropped - 1
    # Over budget with events only: events are still accepted.
    ob.confirm([r[0] for r in ob.read(TELEMETRY, 0, 100_000)])
    for _ in range(30):
        ob.append("b", [(EVENTS, event)] * 200, 3)
    assert ob.depth().events == 6_100 and ob.depth().telemetry == 0
    ob.close()
    assert Outbox(tmp_path / "o.sqlite3").depth().dropped_telemetry == dropped


def test_redelivered_lan_message_is_stored_once(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    m = Incoming([(TELEMETRY, '{"n":1}')], mid=7, digest=b"A" * 16)
    assert len(ob.append("b", [m], 1).seqs) == 1
    again = Incoming([(TELEMETRY, '{"n":1}')], mid=7, digest=b"A" * 16, dup=True)
    res = ob.append("b", [again], 2)
    assert (res.seqs, res.duplicates) == ([], 1)
    # The same packet id reused for a new message (no DUP flag) is a new message.
    new = Incoming([(TELEMETRY, '{"n":1}')], mid=7, digest=b"A" * 16)
    assert len(ob.append("b", [new], 3).seqs) == 1
    # A DUP with another digest is another message (its first copy never arrived).
    other = Incoming([(TELEMETRY, '{"n":2}')], mid=7, digest=b"B" * 16, dup=True)
    assert len(ob.append("b", [other], 4).seqs) == 1
    assert ob.depth().telemetry == 3
    ob.close()


def event_of(dev: str, i: int, pad: int = 0) -> str:
    return json.dumps(
        {"d": dev, "k": "e", "ts": 1, "rx": 1, "e": "alarm", "x": {"i": i, "p": "x" * pad}}
    )


def test_a_flooding_device_evicts_only_its_own_oldest_events(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    ob = Outbox(path, device_events_max=100, device_event_bytes_max=64 * 1024)
    quiet = ob.append("b", [(EVENTS, event_of("quiet", 0))], 1).seqs
    for start in range(0, 1000, 50):
        res = ob.append("b", [(EVENTS, event_of("loud", i)) for i in range(start, start + 50)], 2)
        assert set(res.dropped_events) <= {"loud"}
    assert ob.device_events("loud") == 100 and ob.device_events("quiet") == 1
    rows = ob.read(EVENTS, 0, 1000)
    assert rows[0][0] == quiet[0]
    assert [json.loads(r[2])["x"]["i"] for r in rows[1:]] == list(range(900, 1000))
    assert ob.depth().events == 101 and ob.depth().dropped_events == {"loud": 900}
    # The byte share: big events of one device make room by its own oldest.
    ob.append("b", [(EVENTS, event_of("big", i, pad=10_000)) for i in range(20)], 3)
    assert ob.device_events("big") == 6  # 6 x ~10 KiB within 64 KiB
    # Confirmation frees the share; a restart reads the shares back.
    ob.confirm([r[0] for r in ob.read(EVENTS, 0, 1000)[:51]])
    assert ob.device_events("loud") == 50 and ob.device_events("quiet") == 0
    ob.close()
    again = Outbox(path, device_events_max=100, device_event_bytes_max=64 * 1024)
    assert again.device_events("loud") == 50 and again.device_events("big") == 6
    assert again.depth().dropped_events == {"big": 14, "loud": 900}
    assert again.depth().events == again.lane_depth(EVENTS) == 56
    again.close()
    assert read_depth(path).dropped_events == {"big": 14, "loud": 900}


# ---- the sender ---------------------------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_sender(tmp_path: Path, **cfg: Any) -> tuple[Outbox, Sender, list[list[int]], FakeTime]:
    ob = Outbox(tmp_path / "o.sqlite3")
    clock = FakeTime()
    oc = OutboxConfig.model_validate({"path": str(tmp_path / "o.sqlite3"), **cfg})
    s = Sender(ob, oc, "g", GatewayMetrics(), clock=clock)
    sent: list[list[int]] = []
    return ob, s, sent, clock


def publisher(sent: list[list[int]]) -> Any:
    def publish(payload: bytes, events_only: bool) -> bool:
        _gw, recs = decode_batch(up_topic("g", events=events_only), payload)
        assert events_only == all(r.kind != "t" for r in recs)
        sent.append([r.seq for r in recs])
        return True

    return publish


def body_of(n: int, kind: str = "t") -> str:
    extra = {"m": {"n": n}} if kind == "t" else {"e": "alarm", "x": {}}
    return record_body(device_id="d", kind=kind, ts=RX, rx=RX, gateway_timed=False, payload=extra)  # type: ignore[arg-type]


def test_sender_events_overtake_a_full_telemetry_window(tmp_path: Path) -> None:
    ob, s, sent, clock = make_sender(tmp_path, window=100, batch_max=50, replay_rate=0)
    tel = ob.append("b", [(TELEMETRY, body_of(i)) for i in range(1000)], 1).seqs
    s.pump(publisher(sent))
    assert sum(map(len, sent)) == 100 and s.inflight == 100  # the window is full
    ev = ob.append("b", [(EVENTS, body_of(0, "e"))], 2).seqs
    sent.clear()
    s.pump(publisher(sent))
    assert sent == [ev]  # the alarm goes although no telemetry was confirmed
    # Confirmations open the window again.
    s.on_ack(tel[:50] + ev)
    sent.clear()
    s.pump(publisher(sent))
    assert sent == [tel[100:150]]
    # Unconfirmed records go again after the timeout, oldest first.
    clock.t += 11
    sent.clear()
    s.pump(publisher(sent))
    assert sent[0] == tel[50:100]
    ob.close()


def test_unconfirmed_events_go_again_after_2_s_telemetry_after_10_s(tmp_path: Path) -> None:
    ob, s, sent, clock = make_sender(tmp_path, replay_rate=0, send_linger_ms=0)
    tel = ob.append("b", [(TELEMETRY, body_of(i)) for i in range(10)], 1).seqs
    ev = ob.append("b", [(EVENTS, body_of(0, "e"))], 2).seqs
    s.pump(publisher(sent))
    assert sent == [ev, tel]  # (a backend worker takes them and is killed: no confirmation)
    sent.clear()
    clock.t += 1.9
    assert s.pump(publisher(sent)) <= 0.25 and sent == []
    clock.t += 0.2
    s.pump(publisher(sent))
    assert sent == [ev]  # the alarm again, the readings not yet
    sent.clear()
    clock.t += 2.1
    s.pump(publisher(sent))
    assert sent == [ev]
    sent.clear()
    clock.t += 6
    s.pump(publisher(sent))
    assert sent == [ev, tel]
    s.on_ack(ev + tel)
    sent.clear()
    clock.t += 60
    s.pump(publisher(sent))
    assert sent == [] and s.inflight == 0
    ob.close()


def test_reconnect_delays_stay_short_early_in_an_outage_then_grow() -> None:
    clock = FakeTime()
    delays = reconnect_delays(1.0, 4.0, 300.0, 60.0, rng=random.Random(7), clock=clock)
    early = []
    while clock.t < 1000.0 + 300.0:
        d = next(delays)
        early.append(d)
        clock.t += d
    assert min(early) >= 1.0 and max(early) <= 4.0 and len(set(early)) > 10
    late = [next(delays) for _ in range(50)]
    assert max(late) > 30 and max(late) <= 60.0
    # Gateways cut off together do not come back together: their attempts differ.
    firsts = {round(next(decorrelated(1.0, 4.0, random.Random(i))), 3) for i in range(100)}
    assert len(firsts) > 90


def test_sender_paces_telemetry(tmp_path: Path) -> None:
    ob, s, sent, clock = make_sender(tmp_path, replay_rate=100, batch_max=500, window=100_000)
    ob.append("b", [(TELEMETRY, body_of(i)) for i in range(1000)], 1)
    s.pump(publisher(sent))
    first = sum(map(len, sent))
    assert first <= 500  # the bucket holds at most max(rate, batch_max)
    for _ in range(10):
        clock.t += 1.0
        s.pump(publisher(sent))
    assert sum(map(len, sent)) - first <= 10 * 100 + 1
    ob.close()


def test_sender_lingers_for_live_telemetry_but_never_for_events(tmp_path: Path) -> None:
    ob, s, sent, clock = make_sender(tmp_path, replay_rate=0, send_linger_ms=50, batch_max=100)
    ob.append("b", [(TELEMETRY, body_of(1))], 1)
    pause = s.pump(publisher(sent))
    assert sent == [] and 0 < pause <= 0.05  # one reading waits for company
    ev = ob.append("b", [(EVENTS, body_of(2, "e"))], 1).seqs
    s.pump(publisher(sent))
    assert sent == [ev]  # an event goes at once
    clock.t += 0.02
    more = ob.append("b", [(TELEMETRY, body_of(i)) for i in range(3, 6)], 1).seqs
    s.pump(publisher(sent))
    assert len(sent) == 1
    clock.t += 0.031
    s.pump(publisher(sent))
    assert len(sent) == 2 and sent[1][-3:] == more and len(sent[1]) == 4
    # A full batch does not wait.
    full = ob.append("b", [(TELEMETRY, body_of(i)) for i in range(100)], 1).seqs
    s.pump(publisher(sent))
    assert sent[2] == full
    ob.close()


def test_sender_caps_a_batch_by_bytes(tmp_path: Path) -> None:
    ob, s, sent, _clock = make_sender(
        tmp_path, replay_rate=0, send_linger_ms=0, batch_bytes_max=64 * 1024
    )
    big = record_body(
        device_id="d",
        kind="t",
        ts=RX,
        rx=RX,
        gateway_timed=False,
        payload={"m": {"s": "x" * 20_000}},
    )
    ob.append("b", [(TELEMETRY, big)] * 10, 1)
    s.pump(publisher(sent))
    assert [len(b) for b in sent] == [3, 3, 3, 1]
    ob.close()


def test_sender_holds_telemetry_but_never_events(tmp_path: Path) -> None:
    ob, s, sent, _clock = make_sender(tmp_path, replay_rate=0)
    ob.append("b", [(TELEMETRY, body_of(1))], 1)
    ev = ob.append("b", [(EVENTS, body_of(2, "e"))], 1).seqs
    s.pump(publisher(sent), hold_telemetry=True)
    assert sent == [ev]
    ob.close()


# ---- the wire -----------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=1000), max_size=300))
def test_compressed_and_plain_batches_decode_alike(ns: list[int]) -> None:
    rows = [(i + 1, "boot", body_of(n)) for i, n in enumerate(ns)]
    plain = encode_batch("gw-1", rows)
    packed = compress_batch(plain, above=0)
    assert packed[:1] == COMPRESSED
    assert decode_batch(up_topic("gw-1"), packed) == decode_batch(up_topic("gw-1"), plain)


def test_compressed_garbage_and_bombs_are_rejected() -> None:
    for payload in (COMPRESSED + b"nonsense", COMPRESSED + zlib.compress(b"{" * 10)[:-3]):
        try:
            decode_batch(up_topic("g"), payload)
        except UplinkDecodeError as exc:
            assert exc.reason in ("bad_compression", "bad_json")
        else:
            raise AssertionError(payload)
    bomb = COMPRESSED + zlib.compress(b" " * (40 * 1024 * 1024))
    try:
        decode_batch(up_topic("g"), bomb)
    except UplinkDecodeError as exc:
        assert exc.reason == "bad_compression"
    else:
        raise AssertionError("a decompression bomb was accepted")


def test_acks_are_read_within_bounds() -> None:
    assert parse_ack(b'{"seqs": [1, 2, 3]}') == [1, 2, 3]
    for bad in (
        b'{"seqs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"seqs": [' + b"9" * 5_000 + b"]}",
        b'{"seqs": [' + b"1," * 60_000 + b"1]}",
        b'{"seqs": ["1"]}',
        b'{"seqs": 3}',
        b"\xff",
        b"[" + b" " * (2 << 20) + b"]",
    ):
        with pytest.raises(InputError):
            parse_ack(bad)


@given(st.lists(st.integers(min_value=0, max_value=2**62), max_size=50))
def test_ack_round_trip(seqs: list[int]) -> None:
    assert decode_ack(encode_ack(seqs)) == seqs


# ---- configuration ------------------------------------------------------------------------


def base_config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway_id": "gw-1",
            "lan": {"url": "mqtt://127.0.0.1:1883"},
            "uplink": {"url": "mqtt://127.0.0.1:1884"},
            "outbox": {"path": str(tmp_path / "o.sqlite3")},
            "devices": ["elev-1"],
        }
    )


def test_config_file_errors_name_the_line_and_key(tmp_path: Path) -> None:
    f = tmp_path / "gw.yaml"
    f.write_text(
        "gateway_id: gw-1\nlan: {url: 'mqtt://h:1'}\nuplink: {url: 'mqtt://h:2'}\n"
        "outbox:\n  path: /tmp/x\n  replay_rate: -5\n  disk: 3\ndevices: []\n"
    )
    try:
        load_gateway_config(f)
    except ConfigError as exc:
        msg = str(exc)
    else:
        raise AssertionError("accepted")
    assert f"{f}:6: outbox.replay_rate" in msg
    assert f"{f}:7: outbox.disk: Extra inputs are not permitted" in msg


def test_remote_config_is_validated_merged_and_versioned(tmp_path: Path) -> None:
    cur = base_config(tmp_path)
    ok = parse_remote(
        cur, json.dumps({"version": 3, "config": {"outbox": {"replay_rate": 50}}}).encode()
    )
    assert isinstance(ok, RemoteRequest)
    assert ok.config.outbox.replay_rate == 50 and ok.config.config_version == 3
    assert ok.config.outbox.path == cur.outbox.path and ok.config.uplink == cur.uplink
    bad = parse_remote(cur, b'{"version": 4, "config": {"outbox": {"window": 0}}}')
    assert isinstance(bad, RemoteResult) and not bad.ok and "outbox.window" in (bad.error or "")
    moved = parse_remote(cur, b'{"version": 5, "config": {"outbox": {"path": "/elsewhere"}}}')
    assert isinstance(moved, RemoteResult) and "outbox.path" in (moved.error or "")
    assert parse_remote(ok.config, b'{"version": 3, "config": {}}') is None  # not newer
    assert parse_remote(cur, b'{"version": 6, "config": {}}', rejected_version=6) is None
    assert isinstance(parse_remote(cur, b"nope"), RemoteResult)
    # Bounded: deep nesting, huge numbers and oversized payloads are refused, never raised.
    for payload in (
        b'{"version": 7, "config": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"version": 7, "config": {"outbox": {"window": ' + b"9" * 5_000 + b"}}}",
        b'{"version": 7, "config": {"x": "' + b"a" * 70_000 + b'"}}',
    ):
        refused = parse_remote(cur, payload)
        assert isinstance(refused, RemoteResult) and not refused.ok
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_remote_config_changes_only_the_listed_keys(tmp_path: Path) -> None:
    cur = base_config(tmp_path)

    def push(version: int, change: dict[str, Any], **kw: Any) -> RemoteRequest | RemoteResult:
        out = parse_remote(cur, json.dumps({"version": version, "config": change}).encode(), **kw)
        assert out is not None
        return out

    allowed = push(
        2,
        {
            "heartbeat_s": 10,
            "log_level": "DEBUG",
            "devices": ["dev-2"],
            "outbox": {"send_linger_ms": 5, "events_resend_after_s": 1},
            "supervision": {"stall_s": 30},
        },
    )
    assert isinstance(allowed, RemoteRequest), allowed
    assert allowed.config.log_level == "DEBUG" and allowed.config.devices == ["dev-2"]
    for change, named in (
        ({"uplink": {"url": "mqtt://evil.example.org:1883"}}, "uplink.url"),
        ({"uplink": {"password": "x"}}, "uplink.password"),
        ({"lan": {"username": "x"}}, "lan.username"),
        ({"gateway_id": "gw-other"}, "gateway_id"),
        ({"remote_config": {"enabled": False}}, "remote_config.enabled"),
        ({"outbox": {"device_events_max": 10}}, "outbox.device_events_max"),
        ({"devices": []}, "device list"),
        ({"heartbeat_s": 5, "uplink": {"ca_file": "/tmp/ca"}}, "uplink.ca_file"),
    ):
        refused = push(3, change)
        assert isinstance(refused, RemoteResult) and not refused.ok, change
        assert named in (refused.error or ""), refused
    shrink = push(3, {"outbox": {"max_bytes": 2 * 1024 * 1024}}, outbox_bytes=5 * 1024 * 1024)
    assert isinstance(shrink, RemoteResult) and "outbox.max_bytes" in (shrink.error or "")
    grow = push(3, {"outbox": {"max_bytes": 8 * 1024 * 1024}}, outbox_bytes=5 * 1024 * 1024)
    assert isinstance(grow, RemoteRequest)
    assert changed_keys({"a": [{"p": 1}, {"p": 2}]}, {"a": [{"p": 1}, {"p": 3}]}) == [
        ("a", "1", "p")
    ]
    assert allowed_key(("modbus", "controllers", "0", "poll_s"))
    assert not allowed_key(("modbus", "controllers", "0", "host"))
    assert not allowed_key(("modbus", "controllers"))  # adding or removing a controller


def test_saved_config_keeps_its_mode_and_a_new_one_is_0640(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    f = tmp_path / "gw.yaml"
    save_config(f, cfg)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    f.chmod(0o600)
    save_config(f, cfg.model_copy(update={"config_version": 2}))
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "gw.yaml.prev").stat().st_mode) == 0o600


def test_saved_config_loads_back(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    f = tmp_path / "gw.yaml"
    f.write_text("old")
    new = cfg.model_copy(update={"config_version": 9})
    save_config(f, new)
    assert load_gateway_config(f) == new
    assert (tmp_path / "gw.yaml.prev").read_text() == "old"


def test_status_reads_outbox_and_notices_a_dead_gateway(tmp_path: Path) -> None:
    cfg = base_config(tmp_path)
    ob = Outbox(cfg.outbox.path)
    ob.append("b", [(TELEMETRY, body_of(1)), (EVENTS, body_of(2, "e"))], 1234)
    ob.close()
    write_status(
        cfg.status_path(),
        {
            "running": True,
            "pid": 2**22 + 12345,
            "updated_ms": 10_000,
            "lan_connected": True,
            "uplink": {"connected": True, "url": "mqtt://x:1"},
        },
    )
    s = gather_status(cfg, now_ms=10_500)
    assert s["depth"] == {"events": 1, "telemetry": 1}
    assert s["oldest_unconfirmed_ms"] == 1234 and s["dropped_telemetry"] == 0
    assert s["running"] is False and s["link"] == "down"  # no such process
    assert "events 1" in format_status(s)


def test_sd_notify_speaks_on_the_socket(tmp_path: Path, monkeypatch: Any) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    n = Notifier()
    n.ready()
    n.watchdog()
    n.watchdog()  # within half a period: no second ping
    n.stopping()
    got = [sock.recv(256) for _ in range(3)]
    sock.close()
    assert got[0].startswith(b"READY=1") and got[1:] == [b"WATCHDOG=1", b"STOPPING=1"]


def test_a_failed_gateway_stops_serve_with_an_error_the_cli_exits_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anju.errors import AnjuError
    from gateway import serve
    from gateway.service import Gateway
    from gateway.supervise import GatewayFailure

    def failing(self: Gateway, stop: threading.Event, **_: Any) -> None:
        self.outbox.close()
        raise GatewayFailure("commit", "injected")

    monkeypatch.setattr(Gateway, "run", failing)
    with pytest.raises(GatewayFailure) as err:
        serve(base_config(tmp_path), threading.Event(), config_path=None)
    assert isinstance(err.value, AnjuError)  # `anju gateway run` exits 2


def test_progress_marks_stalls_and_restart_budget() -> None:
    from gateway.supervise import Progress, Restarts

    t = [100.0]
    p = Progress(5.0, ("intake", "commit"), clock=lambda: t[0])
    t[0] += 3
    p.beat("intake")
    t[0] += 3
    assert p.stalled() == ["commit"] and not p.healthy() and p.stalled_for() == 6
    p.beat("commit")
    assert p.healthy()
    errors: list[int] = []
    r = Restarts("commit", p, lambda: errors.append(1), max_errors=2, clock=lambda: t[0])
    assert r.allow(RuntimeError("a")) and r.allow(RuntimeError("b"))
    t[0] += 61  # old errors leave the window
    assert r.allow(RuntimeError("c")) and r.allow(RuntimeError("d"))
    assert not r.allow(RuntimeError("e")) and p.failed and p.failure is not None
    assert p.failure.part == "commit" and len(errors) == 5 and not p.healthy()
