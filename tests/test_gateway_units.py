"""Gateway pieces without a broker: input validation, the outbox, the uplink format."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from anju.uplink import UplinkDecodeError, decode_batch, encode_batch, record_body, up_topic
from gateway.outbox import EVENTS, TELEMETRY, Outbox
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
        ("anju/dev/elev-1/telemetry", '{"metrics": {"speed_mps": NaN}}'): "bad_json",
        ("anju/dev/elev-1/telemetry", '{"metrics": {"x": 1e999}}'): "bad_metric",
        ("anju/dev/elev-1/telemetry", '{"ts": "yesterday", "metrics": {}}'): "bad_ts",
        ("anju/dev/elev-1/telemetry", '{"ts": 12, "metrics": {}}'): "bad_ts",
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
    assert rec.metrics == metrics


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


def test_outbox_events_first_resend_and_confirm(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite3")
    t = ob.append("b", [(TELEMETRY, '{"n":1}'), (TELEMETRY, '{"n":2}')], 1000)
    e = ob.append("b", [(EVENTS, '{"n":3}')], 1001)
    rows = ob.take(2, now_ms=2000, resend_after_ms=10_000)
    assert [r[0] for r in rows] == [e[0], t[0]]  # the event goes first
    assert [r[0] for r in ob.take(10, now_ms=2001, resend_after_ms=10_000)] == [t[1]]
    assert ob.take(10, now_ms=2002, resend_after_ms=10_000) == []
    # Unconfirmed records are handed out again after the timeout.
    assert len(ob.take(10, now_ms=20_000, resend_after_ms=10_000)) == 3
    assert ob.confirm([e[0], t[0]]) == 2
    d = ob.depth()
    assert (d.events, d.telemetry) == (0, 1)
    ob.close()
    # Survives a restart, sequence numbers are never reused.
    ob2 = Outbox(tmp_path / "o.sqlite3")
    ob2.unsend_all()
    [(seq, _b, body)] = ob2.take(10, now_ms=30_000, resend_after_ms=10_000)
    assert (seq, body) == (t[1], '{"n":2}')
    ob2.confirm([seq])
    [new] = ob2.append("b2", [(EVENTS, "{}")], 31_000)
    assert new > seq
    ob2.close()
