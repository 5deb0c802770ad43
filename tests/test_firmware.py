"""Firmware stubs on CPython: against a fake hardware layer and a fake MQTT client, then
against a real Mosquitto through a paho adapter with the umqtt.simple API; and a check that the
device code imports only what MicroPython has."""

from __future__ import annotations

import ast
import itertools
import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from anju.servers import PrivateMosquitto
from gateway.validate import Accepted, decode_device_message

STUBS = Path(__file__).resolve().parent.parent / "firmware_stubs"
sys.path.insert(0, str(STUBS))  # device modules import each other flat, as on the board

from anju_node import Debounce, Ring  # noqa: E402
from elevator_terminal import ElevatorTerminal  # noqa: E402
from pressure_node import PressureNode  # noqa: E402
from smoke_node import SmokeNode  # noqa: E402

EPOCH = 1_764_122_400_000

MICROPYTHON_MODULES = frozenset(
    {
        "time", "json", "ujson", "machine", "network", "umqtt", "umqtt.simple", "gc", "sys",
        "collections", "struct", "binascii", "micropython", "anju_node",
    }
)  # fmt: skip


# Fakes: the hardware layer and an MQTT client with the umqtt.simple API.


class FakeHw:
    def __init__(self) -> None:
        self.t = 0
        self.obscuration = 0.02
        self.temperature = 22.0
        self.pressure = 0.32
        self.tampered = False
        self.battery: int | None = 87
        self.clock_set = True
        self.car: dict[str, Any] = {
            "floor": 1, "door_closed": True, "door_zone": True, "moving": False,
            "direction": "none", "speed_mps": 0.0, "passenger": False, "up_limit": False,
            "down_limit": False, "power_ok": True, "service_mode": "normal",
            "alarm_button": False, "run_count": 1000, "run_hours": 12.5,
        }  # fmt: skip
        self.fault: str | None = None

    def ticks_ms(self) -> int:
        return self.t

    def epoch_ms(self) -> int | None:
        return EPOCH + self.t if self.clock_set else None

    def battery_pct(self) -> int | None:
        return self.battery

    def read_smoke(self) -> tuple[float, float]:
        return self.obscuration, self.temperature

    def tamper(self) -> bool:
        return self.tampered

    def read_pressure_mpa(self) -> float:
        return self.pressure

    def read_car(self) -> dict[str, Any]:
        return dict(self.car)

    def fault_code(self) -> str | None:
        return self.fault


class FakeClient:
    """Records what a umqtt.simple client would send; ``up = False`` makes it fail."""

    def __init__(self) -> None:
        self.up = True
        self.will: tuple[str, bytes, bool, int] | None = None
        self.sent: list[tuple[str, dict[str, Any], bool, int]] = []
        self.connects = 0

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self.will = (topic, msg, retain, qos)

    def connect(self, clean_session: bool = True) -> int:
        if not self.up:
            raise OSError("ECONNREFUSED")
        self.connects += 1
        return 0

    def publish(self, topic: str, msg: str | bytes, retain: bool = False, qos: int = 0) -> None:
        if not self.up:
            raise OSError("ECONNRESET")
        self.sent.append((topic, json.loads(msg), retain, qos))

    def disconnect(self) -> None:
        pass

    def check_msg(self) -> None:
        if not self.up:
            raise OSError("ECONNRESET")

    def of(self, channel: str) -> list[dict[str, Any]]:
        return [p for t, p, _, _ in self.sent if t.endswith("/" + channel)]


def poll(node: Any, hw: FakeHw, times: int, step_ms: int = 1000) -> None:
    for _ in range(times):
        node.poll()
        hw.t += step_ms


def test_ring_is_bounded_and_counts_drops() -> None:
    r = Ring(3)
    for i in range(5):
        r.push(i)
    assert len(r) == 3 and r.dropped == 2
    assert [r.pop(), r.pop(), r.pop(), r.pop()] == [2, 3, 4, None]


def test_debounce_ignores_a_short_glitch() -> None:
    d = Debounce(3)
    assert [d.update(x) for x in (True, True, False, True, True, True)] == [
        False, False, False, False, False, True,
    ]  # fmt: skip
    assert d.value is True


def test_smoke_node_last_will_status_alarm_and_debounce() -> None:
    hw, client = FakeHw(), FakeClient()
    node = SmokeNode("jx-test-smoke-1", client, hw)
    poll(node, hw, 3)
    assert client.will == ("anju/dev/jx-test-smoke-1/status", b'{"online":false}', True, 1)
    topic, status, retain, qos = client.sent[0]
    assert topic.endswith("/status") and status["online"] is True and retain and qos == 1
    assert status["battery_pct"] == 87
    # One dusty sample does not alarm; three in a row do, once.
    hw.obscuration = 0.4
    poll(node, hw, 1)
    hw.obscuration = 0.02
    poll(node, hw, 3)
    assert client.of("event") == []
    hw.obscuration = 0.4
    poll(node, hw, 6)
    [alarm] = client.of("event")
    assert alarm["type"] == "alarm" and alarm["ts"] == EPOCH + 9000
    assert client.of("telemetry")[-1]["metrics"]["smoke"] is True
    # Everything it sent passes the gateway's validation.
    for t, p, _, _ in client.sent:
        items = decode_device_message(t, json.dumps(p).encode(), known={node.device_id}, rx_ms=0)
        assert all(isinstance(i, Accepted) for i in items), items


def test_offline_buffer_is_bounded_and_flushed_events_first() -> None:
    hw, client = FakeHw(), FakeClient()
    node = SmokeNode("s-1", client, hw, report_ms=1000)
    poll(node, hw, 2)
    client.up = False
    poll(node, hw, 40)  # 40 telemetry readings while the broker is away: the ring keeps 32
    hw.tampered = True
    poll(node, hw, 3)
    assert not node.connected and node.dropped() > 0 and len(node.events) == 1
    before = len(client.sent)
    client.up = True
    hw.t += 120_000  # past any backoff
    poll(node, hw, 1)
    after = client.sent[before:]
    assert after[0][0].endswith("/status") and after[1][0].endswith("/event")
    assert all(t.endswith("/telemetry") for t, _, _, _ in after[2:])
    stamps = [p["ts"] for t, p, _, _ in after[2:]]
    assert stamps == sorted(stamps) and len(stamps) == 32 + 1


def test_reconnect_backs_off() -> None:
    hw, client = FakeHw(), FakeClient()
    client.up = False
    node = PressureNode("w-1", client, hw)
    attempts = []
    for _ in range(120):
        before = node._backoff_ms
        node.poll()
        if node._backoff_ms != before:
            attempts.append(hw.t)
        hw.t += 1000
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) >= 4 and gaps == sorted(gaps) and gaps[-1] > gaps[0]


def test_pressure_node_reports_the_median_and_a_drop_at_once() -> None:
    hw, client = FakeHw(), FakeClient()
    node = PressureNode("w-1", client, hw, report_ms=60_000)
    poll(node, hw, 5)
    hw.pressure = 1.5  # one water-hammer spike
    poll(node, hw, 1)
    hw.pressure = 0.32
    poll(node, hw, 3)
    assert len(client.of("telemetry")) == 1  # periodic only, the spike changed nothing
    hw.pressure = 0.05
    hw.clock_set = False
    poll(node, hw, 8)
    last = client.of("telemetry")[-1]
    assert last["metrics"]["pressure_mpa"] == 0.05 and "ts" not in last


def test_elevator_terminal_events_and_report_on_change() -> None:
    hw, client = FakeHw(), FakeClient()
    node = ElevatorTerminal("e-1", client, hw)
    poll(node, hw, 2)
    n = len(client.of("telemetry"))
    hw.car.update(door_closed=False)
    poll(node, hw, 1)  # one bouncing sample: nothing
    hw.car.update(door_closed=True)
    poll(node, hw, 2)
    assert len(client.of("telemetry")) == n
    hw.car.update(moving=True, direction="up", speed_mps=1.0, passenger=True, door_zone=False)
    poll(node, hw, 5)
    moving = [t["metrics"] for t in client.of("telemetry")[n:]]
    assert moving and moving[-1]["moving"] is True and moving[-1]["passenger"] is True
    assert len(moving) >= 4  # every second while moving
    hw.car.update(moving=False, speed_mps=0.0, alarm_button=True)
    hw.fault = "04"
    poll(node, hw, 3)
    types = [(e["type"], e["data"]) for e in client.of("event")]
    # The fault code is sent at once, the button after its debounce.
    assert types == [("fault", {"code": "04"}), ("alarm_button", {"floor": 1})]
    last = client.of("telemetry")[-1]["metrics"]
    assert last["moving"] is False and last["speed_mps"] == 0.0 and last["direction"] == "none"


# The same code against a real Mosquitto, through paho with the umqtt.simple API.


class PahoUmqtt:
    """A CPython stand-in for umqtt.simple.MQTTClient over paho-mqtt (test code, not device
    code): blocking connect and QoS 1 publish, OSError on any network failure."""

    def __init__(self, client_id: str, host: str, port: int) -> None:
        self.client_id, self.host, self.port = client_id, host, port
        self.will: tuple[str, bytes, bool, int] | None = None
        self._c: mqtt.Client | None = None

    def set_last_will(self, topic: str, msg: bytes, retain: bool = False, qos: int = 0) -> None:
        self.will = (topic, msg, retain, qos)

    def connect(self, clean_session: bool = True) -> int:
        self.drop()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if self.will:
            topic, msg, retain, qos = self.will
            c.will_set(topic, msg, qos=qos, retain=retain)
        try:
            c.connect(self.host, self.port, keepalive=5)
        except OSError:
            raise
        c.loop_start()
        self._c = c
        return 0

    def publish(self, topic: str, msg: str | bytes, retain: bool = False, qos: int = 0) -> None:
        if self._c is None or (not self._c.is_connected() and qos == 0):
            raise OSError("not connected")
        info = self._c.publish(topic, msg, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"publish failed: {info.rc}")
        if qos:
            info.wait_for_publish(timeout=5)
            if not info.is_published():
                raise OSError("no PUBACK")

    def check_msg(self) -> None:
        if self._c is None or not self._c.is_connected():
            raise OSError("connection lost")

    def disconnect(self) -> None:
        if self._c is not None:
            self._c.disconnect()
            self._c.loop_stop()
            self._c = None

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT (the broker sends the Last Will)."""
        if self._c is not None:
            self._c.loop_stop()
            sock = self._c.socket()
            if sock is not None:
                sock.close()
            self._c = None


class Listener:
    def __init__(self, port: int, topic: str) -> None:
        self.got: list[tuple[str, dict[str, Any], bool]] = []
        self.changed = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *_a: subscribed.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, qos=1)
        self.c.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.changed:
            self.got.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))
            self.changed.notify_all()

    def wait_for(self, pred: Any, timeout: float = 20.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: any(pred(*g) for g in self.got), timeout), self.got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_smoke_node_against_a_real_broker(lan_broker: PrivateMosquitto) -> None:
    dev = f"jx-fw-{uuid.uuid4().hex[:8]}"
    listener = Listener(lan_broker.port, f"anju/dev/{dev}/#")
    hw = FakeHw()
    client = PahoUmqtt(dev, "127.0.0.1", lan_broker.port)
    node = SmokeNode(dev, client, hw, report_ms=2000)
    try:
        poll(node, hw, 3)
        listener.wait_for(lambda t, p, r: t.endswith("/status") and p.get("online") is True)
        listener.wait_for(lambda t, p, r: t.endswith("/telemetry"))
        # The broker goes away: the alarm waits in the node's ring, then arrives.
        lan_broker.stop()
        hw.obscuration = 0.5
        poll(node, hw, 4)
        assert not node.connected and len(node.events) == 1
        lan_broker.start()
        listener.close()
        listener = Listener(lan_broker.port, f"anju/dev/{dev}/#")
        hw.t += 120_000  # past any reconnect backoff
        for _ in range(50):
            node.poll()
            hw.t += 1000
            if node.connected and not len(node.events):
                break
        listener.wait_for(lambda t, p, r: t.endswith("/event") and p["type"] == "alarm")
        listener.wait_for(lambda t, p, r: t.endswith("/status") and p.get("online") is True)
        for topic, payload, _ in listener.got:
            items = decode_device_message(
                topic, json.dumps(payload).encode(), known={dev}, rx_ms=EPOCH
            )
            assert items and all(isinstance(i, Accepted) for i in items), items
        # An unclean loss: the broker publishes the Last Will, retained.
        client.drop()
        listener.wait_for(lambda t, p, r: t.endswith("/status") and p == {"online": False})
    finally:
        node.stop()
        listener.close()


# The device code uses only what MicroPython has.


def _device_files() -> list[Path]:
    return sorted(STUBS.glob("*.py"))


def micropython_problems(source: str) -> list[str]:
    """What in ``source`` would not run on MicroPython: imports of modules it lacks, relative
    imports, f-strings with ``=``, dataclasses and bare variable annotations."""
    tree = ast.parse(source)
    problems: list[str] = []
    guarded: set[int] = set()
    for node in ast.walk(tree):
        # Typing imports under `if False:` never run on the device.
        if isinstance(node, ast.If) and isinstance(node.test, ast.Constant) and not node.test.value:
            guarded |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.level:
                problems.append(f"line {node.lineno}: relative import (use flat modules)")
        for name in names:
            if name not in MICROPYTHON_MODULES:
                problems.append(f"line {node.lineno}: imports {name}, which MicroPython lacks")
        if isinstance(node, ast.JoinedStr):
            text = ast.get_source_segment(source, node) or ""
            if "=}" in text or "=!" in text or "=:" in text:
                problems.append(f"line {node.lineno}: f-string with '=' (not in MicroPython)")
        if isinstance(node, ast.AnnAssign) and node.value is None:
            problems.append(f"line {node.lineno}: bare variable annotation")
        if isinstance(node, ast.Name) and node.id in {"dataclass", "dataclasses"}:
            problems.append(f"line {node.lineno}: dataclasses")
    return problems


@pytest.mark.parametrize("path", _device_files(), ids=lambda p: p.name)
def test_device_code_is_micropython(path: Path) -> None:
    assert micropython_problems(path.read_text(encoding="utf-8")) == []


def test_the_micropython_check_catches_cpython_only_code() -> None:
    bad = (
        "import threading\n"
        "from dataclasses import dataclass\n"
        "from . import anju_node\n"
        "x = 3\n"
        "print(f'{x=}')\n"
        "if False:\n"
        "    from typing import Any\n"
    )
    found = micropython_problems(bad)
    assert any("threading" in p for p in found)
    assert any("imports dataclasses" in p for p in found)
    assert any("relative import" in p for p in found)
    assert any("f-string" in p for p in found)
    assert not any("typing" in p for p in found)
