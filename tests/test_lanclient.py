"""gateway.lanclient.LanClient on a byte stream: its fast PUBLISH path against paho's reader.

The client talks to one end of a socket pair (its ``_create_socket``); the test writes the
broker's bytes into the other end in chunks of its choosing and runs the client's ``loop`` on
its own thread, so what each ``recv`` sees is decided by the test, not by timing.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.lanclient import FAST, READ_CHUNK, TURN_CHUNKS, LanClient

CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"


def remaining_length(n: int, width: int = 1) -> bytes:
    """MQTT's variable length, padded to ``width`` bytes (a non-minimal encoding is valid)."""
    digits = []
    while True:
        digits.append(n & 127)
        n >>= 7
        if not n:
            break
    while len(digits) < width:
        digits.append(0)
    return bytes([d | 128 for d in digits[:-1]] + [digits[-1]])


def publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    mid: int,
    *,
    dup: bool = False,
    retain: bool = False,
    width: int = 1,
) -> bytes:
    header = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"")
    body += payload
    return bytes([header]) + remaining_length(len(body), width) + body


def suback(mid: int) -> bytes:
    return b"\x90\x03" + struct.pack("!H", mid) + b"\x01"


@dataclass
class Got:
    topic: bytes
    payload: bytes
    qos: int
    mid: int
    dup: bool
    retain: bool | None  # (not given to on_raw_message)
    via: str = ""  # "fast" (on_raw_message) or "paho" (on_message)


@dataclass
class Harness:
    """A LanClient connected to a socket pair; ``feed`` writes the broker's side."""

    manual: bool  # manual_ack + on_raw_message (the intake's way), else paho's callbacks
    client: Any = None
    peer: socket.socket | None = None
    got: list[Got] = field(default_factory=list)
    unacked: list[int] = field(default_factory=list)
    out: bytearray = field(default_factory=bytearray)  # what the client wrote
    disconnects: int = 0

    def __post_init__(self) -> None:
        harness = self

        class PairClient(LanClient):
            def _create_socket(self) -> Any:
                a, b = socket.socketpair()
                b.setblocking(False)
                if harness.peer is not None:
                    harness.peer.close()  # (the last connection's broker side)
                harness.peer = b
                return a

        c = PairClient(
            CallbackAPIVersion.VERSION2,
            client_id="t",
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=self.manual,
        )
        c.suppress_exceptions = False
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        if self.manual:
            c.on_raw_message = self._on_raw
        self.client = c

    def _on_raw(self, topic: bytes, payload: bytes, qos: int, mid: int, dup: bool) -> None:
        self.got.append(Got(bytes(topic), bytes(payload), qos, mid, dup, None, "fast"))
        if qos:
            self.unacked.append(mid)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.got.append(
            Got(msg._topic, bytes(msg.payload), msg.qos, msg.mid, bool(msg.dup), msg.retain, "paho")
        )
        if self.manual and msg.qos:
            self.unacked.append(msg.mid)

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    def connect(self) -> None:
        self.client.connect("127.0.0.1", 1883, keepalive=3600)
        self.send(CONNACK)
        self.drain_out()
        assert self.out.startswith(b"\x10"), "the CONNECT"
        self.out.clear()

    def send(self, data: bytes) -> None:
        """Write ``data`` into the client's socket, running the client as it fills."""
        view = memoryview(data)
        while view:
            assert self.peer is not None
            try:
                n = self.peer.send(view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            self.pump()

    def pump(self) -> MQTTErrorCode:
        """Run the client until it has read all it can and written all it has."""
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        for _ in range(10_000):
            if self.manual and self.unacked:
                self.client.ack_many(self.unacked)  # (the committer's one write)
                self.unacked.clear()
            sock = self.client.socket()
            if sock is None:
                return rc
            readable = select.select([sock], [], [], 0)[0]
            if not readable and not self.client.want_write():
                self.read_peer()
                return rc
            rc = MQTTErrorCode(self.client.loop(timeout=0))
            self.read_peer()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
        raise AssertionError("the client does not settle")

    def read_peer(self) -> None:
        assert self.peer is not None
        while True:
            try:
                data = self.peer.recv(65536)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.out += data

    def drain_out(self) -> None:
        self.pump()
        self.read_peer()

    def pubacks(self) -> list[int]:
        """The packet ids of the PUBACKs the client wrote (nothing else expected)."""
        out = bytes(self.out)
        assert len(out) % 4 == 0, out[:40]
        mids = []
        for k in range(0, len(out), 4):
            assert out[k : k + 2] == b"\x40\x02", out[k : k + 4]
            mids.append(struct.unpack("!H", out[k + 2 : k + 4])[0])
        return mids

    def close(self) -> None:
        from gateway.mqttclient import finish

        finish(self.client, 0.0)
        if self.peer is not None:
            self.peer.close()


@pytest.fixture
def harness_factory() -> Any:
    made: list[Harness] = []

    def make(manual: bool) -> Harness:
        h = Harness(manual)
        made.append(h)
        h.connect()
        return h

    yield make
    for h in made:
        h.close()


# ---- the property: every message exactly once, byte-identical, in order, acknowledged ------


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    base = draw(st.sampled_from([0, READ_CHUNK - 300, READ_CHUNK, 2 * READ_CHUNK, 190_000]))
    size = base + draw(st.integers(0, 10_000))
    return random.Random(draw(st.integers(0, 2**32))).randbytes(size)


@st.composite
def publishes(draw: st.DrawFn) -> tuple[Got, int]:
    qos = draw(st.integers(0, 1))
    msg = Got(
        topic=draw(st.binary(min_size=1, max_size=300)),
        payload=draw(payloads()),
        qos=qos,
        mid=draw(st.integers(1, 65535)) if qos else 0,
        dup=draw(st.booleans()) if qos else False,
        retain=draw(st.booleans()),
    )
    return msg, draw(st.integers(1, 4))  # the remaining length's width (at least its need)


others = st.sampled_from([PINGRESP, suback(7), suback(65535)])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    manual=st.booleans(),
    items=st.lists(st.one_of(publishes(), others), min_size=1, max_size=14),
    chunks=st.lists(
        st.one_of(st.integers(1, 9), st.integers(1, 3 * READ_CHUNK)), min_size=1, max_size=20
    ),
)
def test_stream_of_publishes_arrives_whole_once_in_order(
    harness_factory: Any, manual: bool, items: list[Any], chunks: list[int]
) -> None:
    h = harness_factory(manual)
    stream = bytearray()
    sent: list[Got] = []
    for item in items:
        if isinstance(item, bytes):
            stream += item
            continue
        msg, width = item
        stream += publish(
            msg.topic,
            msg.payload,
            msg.qos,
            msg.mid,
            dup=msg.dup,
            retain=bool(msg.retain),
            width=width,
        )
        sent.append(msg)
    pos = 0
    k = 0
    while pos < len(stream):
        size = chunks[k % len(chunks)]
        k += 1
        h.send(bytes(stream[pos : pos + size]))
        pos += size
    h.drain_out()

    assert h.client.socket() is not None, "the connection survives"
    assert h.disconnects == 0
    assert len(h.got) == len(sent)
    for want, got in zip(sent, h.got, strict=True):
        assert got.topic == want.topic
        assert got.payload == want.payload  # (byte-identical: == on bytes)
        assert (got.qos, got.mid, got.dup) == (want.qos, want.mid, want.dup)
        if got.retain is not None:
            assert got.retain == want.retain
    assert h.pubacks() == [m.mid for m in sent if m.qos == 1]
    assert h.client._rpos == len(h.client._rbuf)  # nothing left behind in the buffer
    if manual:
        event(f"paths: {sorted({g.via for g in h.got})}")
    event(f"a payload over 64 KiB: {any(len(m.payload) > READ_CHUNK for m in sent)}")


def test_fast_path_is_in_use() -> None:
    """The property above is about the fast path: it is there with this paho."""
    assert FAST


# ---- malformed input: counted as the end of a connection, never an exception -----------------


def lying_publish(declared_topic: int, topic: bytes, qos: int = 0) -> bytes:
    """A PUBLISH whose remaining length is too short for the topic length it declares."""
    body = struct.pack("!H", declared_topic) + topic
    return bytes([0x30 | (qos << 1)]) + remaining_length(len(body)) + body


MALFORMED = {
    "remaining length shorter than the topic": lying_publish(10, b"ab"),
    "remaining length 0": b"\x30\x00",
    "remaining length 1": b"\x30\x01\x00",
    "QoS 1 without room for its packet id": lying_publish(2, b"ab", qos=1),
    "empty topic": publish(b"", b"x", 0, 0),
    "empty topic, QoS 1": publish(b"", b"x", 1, 9),
    "QoS 3": bytes([0x36]) + publish(b"a/b", b"x", 1, 9)[1:],
    "remaining length of 5 bytes": b"\x30\xff\xff\xff\xff\x01",
}


@pytest.mark.parametrize("manual", [True, False], ids=["intake", "paho"])
@pytest.mark.parametrize("bad", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_packet_ends_the_connection_not_the_thread(
    harness_factory: Any, manual: bool, bad: str
) -> None:
    """A malformed packet after good ones: those are delivered (and acknowledged), the client
    drops the connection as paho does for a malformed packet (an error code from ``loop``),
    no exception leaves ``loop``; the next connection does not see the old bytes."""
    h = harness_factory(manual)
    a = publish(b"anju/dev/a/telemetry", b"A" * 100, 1, 1)
    b = publish(b"anju/dev/b/telemetry", b"B" * 100, 1, 2)  # after the bad one, same chunk
    h.send(a + MALFORMED[bad] + b)
    rc = h.pump()
    assert rc != MQTTErrorCode.MQTT_ERR_SUCCESS or h.client.socket() is None
    assert h.client.socket() is None, "the connection was dropped"
    assert [g.payload for g in h.got] == [b"A" * 100]
    # (A's PUBACK, queued in the same read, may be lost with the connection: the broker then
    # delivers A again, which the outbox knows by its packet id and digest.)
    # The next connection starts clean: B (left in the old read buffer) is not delivered
    # from it; the broker sends it again on the new connection.
    h.out.clear()
    h.connect()
    h.out.clear()
    h.send(publish(b"anju/dev/c/telemetry", b"C", 1, 3) + b)
    h.drain_out()
    assert [g.payload for g in h.got] == [b"A" * 100, b"C", b"B" * 100]
    assert h.pubacks() == [3, 2]


ODD_BUT_VALID = {
    "topic not UTF-8": publish(b"anju/\xff\xfe/telemetry", b"x", 1, 5),
    "packet id 0": publish(b"a/b", b"x", 1, 0),
    "QoS 0 with DUP": publish(b"a/b", b"x", 0, 0, dup=True),
    "PUBACK of an unknown id": b"\x40\x02\x12\x34",
    "SUBACK of an unknown id": suback(4242),
    "PINGRESP": PINGRESP,
    "payload empty": publish(b"a/b", b"", 1, 6),
}


@pytest.mark.parametrize("manual", [True, False], ids=["intake", "paho"])
@pytest.mark.parametrize("odd", list(ODD_BUT_VALID), ids=list(ODD_BUT_VALID))
def test_odd_packets_do_not_lose_what_follows(harness_factory: Any, manual: bool, odd: str) -> None:
    h = harness_factory(manual)
    after = [publish(b"anju/dev/x/telemetry", bytes([i]) * 300, 1, 100 + i) for i in range(5)]
    h.send(publish(b"a/first", b"1", 1, 99) + ODD_BUT_VALID[odd] + b"".join(after))
    h.drain_out()
    assert h.client.socket() is not None
    tail = [g.payload for g in h.got if g.topic == b"anju/dev/x/telemetry"]
    assert tail == [bytes([i]) * 300 for i in range(5)]
    assert h.got[0].payload == b"1"
    assert h.pubacks()[-5:] == [100 + i for i in range(5)]


@pytest.mark.parametrize("manual", [True, False], ids=["intake", "paho"])
def test_truncated_packet_at_disconnect_is_not_glued_to_the_next_connection(
    harness_factory: Any, manual: bool
) -> None:
    h = harness_factory(manual)
    whole = publish(b"anju/dev/a/telemetry", b"W" * 5000, 1, 1)
    cut = publish(b"anju/dev/a/telemetry", b"T" * 5000, 1, 2)[:2500]
    h.send(whole + cut)
    h.drain_out()
    assert h.peer is not None
    h.peer.close()  # the broker goes away in the middle of a packet
    h.pump()
    assert h.client.socket() is None
    h.out.clear()
    h.connect()
    h.send(publish(b"anju/dev/a/telemetry", b"N" * 70_000, 1, 3))
    h.drain_out()
    assert [g.payload[:1] for g in h.got] == [b"W", b"N"]
    assert h.got[-1].payload == b"N" * 70_000
    assert h.pubacks() == [3]


# ---- a LAN that never pauses: one loop turn reads a bounded amount ---------------------------


class _Refilling:
    """The client's socket, which has the broker write more after each read (a LAN that
    keeps the socket full: the gateway slower than its devices)."""

    def __init__(self, sock: socket.socket, refill: Any) -> None:
        self._sock = sock
        self._refill = refill

    def recv(self, n: int) -> bytes:
        data = self._sock.recv(n)
        self._refill()
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_loop_turn_reads_a_bounded_amount_and_loses_nothing(harness_factory: Any) -> None:
    """While the socket never runs dry, one ``loop`` turn must still end (so that the network
    thread writes the committer's PUBACKs, sends its keepalive and sees a stop); what it left
    in its read buffer is handled by the next turns, even when the socket is then silent."""
    h = harness_factory(True)
    n = 40_000  # QoS 0 messages of 61 bytes: packets straddle every 64 KiB read
    packets = [publish(b"anju/dev/x/telemetry", b"%055d" % i, 0, 0) for i in range(n)]
    stream = b"".join(packets)
    sent = 0

    def refill() -> None:
        nonlocal sent
        if sent < len(stream):
            assert h.peer is not None
            with contextlib.suppress(BlockingIOError):
                sent += h.peer.send(stream[sent : sent + READ_CHUNK])

    h.client._sock = _Refilling(h.client._sock, refill)
    refill()
    refill()
    before = h.client.chunks
    rc = h.client.loop(timeout=0)
    assert rc == MQTTErrorCode.MQTT_ERR_SUCCESS
    turn = h.client.chunks - before
    assert turn <= 2 * TURN_CHUNKS, f"one loop turn read {turn} chunks of 64 KiB"
    for _ in range(10 * n):  # the rest, turn by turn (the socket runs dry at the end)
        if len(h.got) == n:
            break
        refill()
        assert h.client.loop(timeout=0) == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert [g.payload for g in h.got] == [b"%055d" % i for i in range(n)]
