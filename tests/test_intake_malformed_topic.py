"""The LAN intake given a PUBLISH whose topic is not UTF-8 (MQTT requires it; a broker may
pass it on all the same): a counted, logged ``bad_topic`` rejection, acknowledged in order,
not the gateway's own fault (``internal_error``).

Raw bytes: the intake's LAN client talks to one end of a socket pair (its ``_create_socket``)
and the test plays the broker on the other (Mosquitto itself refuses such a topic)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.intake import DEVICE_TOPICS, LanIntake
from gateway.metrics import GatewayMetrics
from gateway.outbox import Outbox
from tests.test_lanclient import CONNACK, publish

pytestmark = pytest.mark.timeout(60)

DEV = "elev-1"


def read_packet(s: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet from ``s`` (blocking): its first byte and its body."""

    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise AssertionError("the intake closed the connection")
            out += chunk
        return out

    first = exactly(1)[0]
    length = shift = 0
    while True:
        byte = exactly(1)[0]
        length |= (byte & 127) << shift
        shift += 7
        if not byte & 128:
            break
    return first, exactly(length)


@pytest.fixture
def broker_side(tmp_path: Path) -> Iterator[tuple[LanIntake, socket.socket]]:
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": "gw-1",
            "lan": {"url": "mqtt://127.0.0.1:1883"},  # (the socket pair instead)
            "uplink": {"url": "mqtt://127.0.0.1:1"},  # (not used here)
            "outbox": {"path": str(tmp_path / "o.sqlite3")},
            "devices": [DEV],
        }
    )
    outbox = Outbox(cfg.outbox.path)
    intake = LanIntake(cfg, outbox, GatewayMetrics(), SystemClock(), "boot-1", lambda _e: None)
    ours, theirs = socket.socketpair()
    theirs.settimeout(20)
    intake.client._create_socket = lambda: ours  # type: ignore[method-assign]
    intake.start()
    try:
        first, _ = read_packet(theirs)
        assert first == 0x10, "the CONNECT"
        theirs.sendall(CONNACK)
        first, body = read_packet(theirs)
        assert first == 0x82, "the SUBSCRIBE"
        theirs.sendall(b"\x90" + bytes([2 + len(DEVICE_TOPICS)]) + body[:2] + b"\x01" * 3)
        yield intake, theirs
    finally:
        intake.stop()
        theirs.close()
        outbox.close()


def test_a_topic_that_is_not_utf8_is_a_bad_topic_rejection(
    broker_side: tuple[LanIntake, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    intake, theirs = broker_side
    reading = b'{"metrics": {"floor": 3}}'
    bad = b"anju/dev/elev-\xff/telemetry"
    theirs.sendall(
        publish(bad, reading, 1, 9) + publish(f"anju/dev/{DEV}/telemetry".encode(), reading, 1, 10)
    )
    acked = []
    while len(acked) < 2:
        first, body = read_packet(theirs)
        if first == 0x40:
            acked.append(struct.unpack("!H", body)[0])
    assert acked == [9, 10]  # the rejected message too, in its place

    def value(name: str, **labels: str) -> float:
        return intake.metrics.registry.get_sample_value(name, labels) or 0.0

    # (The committer counts what it accepted after writing the PUBACKs: wait for it.)
    deadline = time.monotonic() + 10
    while value("anju_gateway_accepted_total", lane="telemetry") < 1:
        assert time.monotonic() < deadline, "the good message was never counted as accepted"
        time.sleep(0.01)
    assert value("anju_gateway_rejected_total", reason="bad_topic") == 1
    assert value("anju_gateway_rejected_total", reason="internal_error") == 0
    assert value("anju_gateway_thread_errors_total", thread="intake") == 0
    assert value("anju_gateway_accepted_total", lane="telemetry") == 1
    ((_rx, reason, payload),) = intake.recent_rejects["?"]
    assert (reason, payload) == ("bad_topic", reading)
    logged = [r.getMessage() for r in caplog.records if r.name == "anju.gateway.lan"]
    assert any("bad_topic" in m and "UTF-8" in m for m in logged), logged
