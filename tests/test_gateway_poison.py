"""Issue 10 on the gateway, on real Mosquitto brokers (LAN and uplink): no message a device sends
stops the alarm path, every thread is supervised, and one device cannot crowd out the others.

The gateway runs in this process; a small acker on the uplink broker stands in for the backend
(it confirms every batch and remembers what it saw), so each test sees exactly what left the
gateway.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import gateway.intake
import gateway.service
from anju.servers import LAN_MAX_PACKET_SIZE, PrivateMosquitto
from anju.uplink import ack_topic, decode_batch, encode_ack, state_topic
from gateway import Gateway, GatewayConfig
from gateway.sdnotify import Notifier
from gateway.status import format_status, gather_status
from gateway.supervise import GatewayFailure

pytestmark = pytest.mark.integration

GW = "gw-poison"
ELEV = "elev-1"
SMOKE = "smoke-1"
FLOOD = "smoke-2"


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def doc(lan: PrivateMosquitto, up: PrivateMosquitto, tmp: Path, **extra: Any) -> dict[str, Any]:
    outbox = {"path": str(tmp / "outbox.sqlite3"), "resend_after_s": 2}
    outbox.update(extra.pop("outbox", {}))
    return {
        "gateway_id": GW,
        "lan": {"url": lan.url},
        "uplink": {"url": up.url, "backoff_base_s": 0.1, "backoff_cap_s": 0.5},
        "outbox": outbox,
        "devices": [ELEV, SMOKE, FLOOD],
        "status_every_s": 0.2,
        "remote_config": {"enabled": False},
        **extra,
    }


class Acker:
    """The backend's part: confirms every batch, keeps each record (device, kind, body)."""

    def __init__(self, port: int) -> None:
        self.records: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-acker")
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *_: ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([("anju/gw/+/up", 1), ("anju/gw/+/up/e", 1), (state_topic(GW), 1)])
        self.c.loop_start()
        assert ready.wait(10)

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/state"):
            with self.lock:
                self.states.append(json.loads(msg.payload))
            return
        gw, recs = decode_batch(msg.topic, bytes(msg.payload))
        with self.lock:
            for r in recs:
                self.records.append(
                    {"d": r.device_id, "k": r.kind, "m": r.metrics, "e": r.event_type, "x": r.data}
                )
        c.publish(ack_topic(gw), encode_ack([r.seq for r in recs]), qos=1)

    def numbers(self) -> list[int]:
        with self.lock:
            return sorted(r["m"]["n"] for r in self.records if r["k"] == "t" and "n" in r["m"])

    def events(self, device: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if r["k"] == "e" and r["d"] == device]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Device:
    """Devices on the LAN broker; ``send`` returns once the broker acknowledged (PUBACK)."""

    def __init__(self, lan: PrivateMosquitto, name: str = "test-devices") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        self.c.connect("127.0.0.1", lan.port)
        self.c.loop_start()
        self.acked: list[int] = []

    def publish(self, device: str, channel: str, payload: bytes | str) -> None:
        info = self.c.publish(f"anju/dev/{device}/{channel}", payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), "the LAN broker did not acknowledge"

    def reading(self, n: int) -> None:
        self.publish(ELEV, "telemetry", json.dumps({"metrics": {"n": n}}))
        self.acked.append(n)

    def alarm(self, device: str = SMOKE, **data: Any) -> None:
        self.publish(device, "event", json.dumps({"type": "alarm", "data": data}))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Running:
    """A gateway's ``run`` on a thread; what it returned or raised."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gateway-under-test")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.gw.run(self.stop)
        except BaseException as exc:
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


@contextmanager
def running(cfg: dict[str, Any], **kw: Any) -> Iterator[Running]:
    r = Running(Gateway(GatewayConfig.model_validate(cfg), **kw))
    try:
        wait_for(r.gw.lan_ready.is_set, 15, "the LAN subscription")
        wait_for(r.gw.uplink_ready.is_set, 15, "the uplink")
        yield r
    finally:
        r.close()


def sample(gw: Gateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def acker(broker: PrivateMosquitto) -> Iterator[Acker]:
    a = Acker(broker.port)
    yield a
    a.close()


@pytest.fixture
def device(lan_broker: PrivateMosquitto) -> Iterator[Device]:
    d = Device(lan_broker)
    yield d
    d.close()


# ---- item 2 of the issue: one LAN message killed intake -------------------------------------


def test_deep_nesting_and_a_lone_surrogate_do_not_stop_intake(
    lan_broker: PrivateMosquitto,
    broker: PrivateMosquitto,
    acker: Acker,
    device: Device,
    tmp_path: Path,
) -> None:
    with running(doc(lan_broker, broker, tmp_path)) as r:
        deep = b'{"metrics": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under 64 KiB
        device.publish(ELEV, "telemetry", deep)  # killed paho's network thread
        deep_event = b'{"type": "alarm", "data": ' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001
        device.publish(SMOKE, "event", deep_event)
        device.publish(SMOKE, "event", b'{"type": "alarm", "data": {"note": "\\ud800"}}')
        device.publish(ELEV, "telemetry", b'{"metrics": {"door": "clo\\u0000sed", "p": -0.0}}')
        device.alarm(smoke=True)  # and an alarm right after: it must get through
        device.reading(1)
        wait_for(lambda: len(acker.events(SMOKE)) == 2, 15, "both alarms upstream")
        wait_for(lambda: acker.numbers() == [1], 15, "the reading upstream")
        gw = r.gw
        assert sample(gw, "anju_gateway_rejected_total", reason="too_deep") == 2
        surrogate, alarm = acker.events(SMOKE)
        assert surrogate["x"] == {"note": "\ufffd"}  # stored, in canonical form
        assert alarm["x"] == {"smoke": True}
        with acker.lock:
            [door] = [x for x in acker.records if x["k"] == "t" and "door" in x["m"]]
        assert door["m"] == {"door": "clo\ufffdsed", "p": 0.0}
        assert sample(gw, "anju_gateway_thread_errors_total", thread="commit") == 0
        assert r.error is None and gw.progress.healthy()


def test_an_oversized_publish_is_refused_by_the_lan_broker_before_buffering(
    broker: PrivateMosquitto, acker: Acker, tmp_path: Path
) -> None:
    lan = PrivateMosquitto(
        tmp_path / "lan64k", name="lan", max_packet_size=LAN_MAX_PACKET_SIZE
    ).start()
    try:
        with running(doc(lan, broker, tmp_path)) as r:
            flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="big-sender")
            gone = threading.Event()
            flood.on_disconnect = lambda *_: gone.set()
            flood.connect("127.0.0.1", lan.port)
            flood.loop_start()
            try:
                flood.publish(f"anju/dev/{ELEV}/telemetry", b"[" + b" " * (8 << 20) + b"]", 1)
                assert gone.wait(15), "the broker kept a client sending 8 MB"
            finally:
                flood.loop_stop()
            dev = Device(lan, "well-behaved")
            try:
                dev.alarm()
            finally:
                dev.close()
            wait_for(lambda: len(acker.events(SMOKE)) == 1, 15, "the alarm upstream")
            assert r.gw.progress.healthy()
    finally:
        lan.stop()


# ---- supervision: an exception in each thread in turn ---------------------------------------


def test_an_exception_in_each_thread_is_survived_and_nothing_acknowledged_is_lost(
    lan_broker: PrivateMosquitto,
    broker: PrivateMosquitto,
    acker: Acker,
    device: Device,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def once(real: Callable[..., Any], armed: threading.Event) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            if armed.is_set():
                armed.clear()
                raise RuntimeError("injected")
            return real(*a, **k)

        return wrapper

    armed = {p: threading.Event() for p in ("intake", "commit", "send", "uplink", "status")}
    monkeypatch.setattr(
        gateway.intake,
        "decode_device_message",
        once(gateway.intake.decode_device_message, armed["intake"]),
    )
    monkeypatch.setattr(
        gateway.service, "write_status", once(gateway.service.write_status, armed["status"])
    )
    with running(doc(lan_broker, broker, tmp_path)) as r:
        gw = r.gw
        gw.outbox.append = once(gw.outbox.append, armed["commit"])  # type: ignore[method-assign]
        gw.sender.pump = once(gw.sender.pump, armed["send"])  # type: ignore[method-assign]
        gw.link.client.loop = once(gw.link.client.loop, armed["uplink"])  # type: ignore[method-assign]
        n = 0
        for part in ("intake", "commit", "send", "uplink", "status"):
            armed[part].set()
            if part == "intake":
                device.alarm(note="handled when the decoder raised")  # rejected, acknowledged
            for _ in range(20):
                n += 1
                device.reading(n)
            wait_for(lambda p=part: not armed[p].is_set(), 15, f"the {part} fault")  # type: ignore[misc]
            device.alarm(after=part)
            wait_for(
                lambda p=part: any(e["x"] == {"after": p} for e in acker.events(SMOKE)), 20, part
            )  # type: ignore[misc]
        wait_for(lambda: acker.numbers()[-1:] == [n], 30, "every reading upstream")
        assert sorted(set(acker.numbers())) == device.acked  # each acknowledged reading arrived
        for part in ("intake", "commit", "send", "uplink", "status"):
            assert sample(gw, "anju_gateway_thread_errors_total", thread=part) >= 1, part
        assert sample(gw, "anju_gateway_rejected_total", reason="internal_error") == 1
        wait_for(gw.progress.healthy, 10, "health")
        assert r.error is None


def test_a_committer_that_cannot_store_fails_the_gateway_and_a_restart_loses_nothing(
    lan_broker: PrivateMosquitto,
    broker: PrivateMosquitto,
    acker: Acker,
    device: Device,
    tmp_path: Path,
) -> None:
    cfg = doc(lan_broker, broker, tmp_path, supervision={"max_errors": 0})
    with running(cfg) as r:
        device.reading(1)
        wait_for(lambda: acker.numbers() == [1], 15, "the first reading")

        def broken(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("injected: the outbox is broken")

        r.gw.outbox.append = broken  # type: ignore[method-assign]
        for n in range(2, 12):
            device.reading(n)  # the LAN broker acknowledges; the gateway must not lose them
        r.thread.join(30)
        assert isinstance(r.error, GatewayFailure) and r.error.part == "commit"
    assert acker.numbers() == [1]
    with running(cfg):  # what systemd does: start it again
        wait_for(lambda: acker.numbers() == list(range(1, 12)), 30, "the rest after restart")


class Pings(Notifier):
    """A systemd that records the watchdog pings."""

    def __init__(self) -> None:
        super().__init__()
        self.watchdog_s = 0.1
        self.pings: list[float] = []

    def notify(self, state: str) -> bool:
        if state == "WATCHDOG=1":
            self.pings.append(time.monotonic())
        return True


def test_a_stuck_committer_stops_the_watchdog_and_says_so_in_the_retained_state(
    lan_broker: PrivateMosquitto,
    broker: PrivateMosquitto,
    acker: Acker,
    device: Device,
    tmp_path: Path,
) -> None:
    cfg = doc(lan_broker, broker, tmp_path, supervision={"stall_s": 1.0, "exit_after_s": 600})
    pings = Pings()
    with running(cfg, notifier=pings) as r:
        gw = r.gw
        real = gw.outbox.append
        release = threading.Event()

        def stuck(*a: Any, **k: Any) -> Any:
            release.wait(60)
            return real(*a, **k)

        gw.outbox.append = stuck  # type: ignore[method-assign]
        device.reading(1)
        wait_for(lambda: gw.progress.stalled() == ["commit"], 10, "the stall to be seen")
        seen = len(pings.pings)
        wait_for(lambda: any(s.get("stalled") == ["commit"] for s in acker.states), 10, "the state")
        assert not [s for s in acker.states if s.get("stalled")][-1]["online"]
        time.sleep(0.5)  # pings go every 0.05 s when healthy
        assert len(pings.pings) == seen, "the watchdog was pinged while the committer was stuck"
        status = gather_status(GatewayConfig.model_validate(cfg))
        assert status["healthy"] is False and status["stalled"] == ["commit"]
        assert "NOT HEALTHY" in format_status(status)
        release.set()
        wait_for(lambda: len(pings.pings) > seen, 10, "the pings again")
        wait_for(lambda: acker.states[-1].get("online") is True, 10, "online again")
        wait_for(lambda: acker.numbers() == [1], 10, "the reading")


def test_a_stall_beyond_exit_after_stops_the_gateway(
    lan_broker: PrivateMosquitto, broker: PrivateMosquitto, device: Device, tmp_path: Path
) -> None:
    cfg = doc(lan_broker, broker, tmp_path, supervision={"stall_s": 0.5, "exit_after_s": 1.5})
    release = threading.Event()
    with running(cfg) as r:
        real = r.gw.outbox.append

        def stuck(*a: Any, **k: Any) -> Any:
            release.wait(60)
            return real(*a, **k)

        r.gw.outbox.append = stuck  # type: ignore[method-assign]
        device.reading(1)
        wait_for(lambda: r.error is not None, 15, "the gateway to give up")
        release.set()
    assert isinstance(r.error, GatewayFailure) and r.error.part == "commit"


# ---- item 6: one device flooding events during an outage ------------------------------------


def test_a_flooding_device_cannot_crowd_out_another_devices_alarm(
    lan_broker: PrivateMosquitto, broker: PrivateMosquitto, device: Device, tmp_path: Path
) -> None:
    cfg = doc(lan_broker, broker, tmp_path, outbox={"device_events_max": 50})
    broker.stop()  # an outage: everything stays in the outbox
    gw = Gateway(GatewayConfig.model_validate(cfg))
    r = Running(gw)
    try:
        wait_for(gw.lan_ready.is_set, 15, "the LAN subscription")
        device.alarm(SMOKE, first=True)
        for i in range(300):
            device.alarm(FLOOD, i=i)
        device.alarm(SMOKE, last=True)
        wait_for(lambda: gw.outbox.device_events(SMOKE) == 2, 15, "the other device's alarms")
        wait_for(
            lambda: sample(gw, "anju_gateway_dropped_events_total", device=FLOOD) == 250,
            15,
            "the drops",
        )  # type: ignore[misc]
        assert gw.outbox.device_events(FLOOD) == 50
        wait_for(lambda: gather_status(gw.cfg).get("dropped_events") == {FLOOD: 250}, 5, "status")
        assert f"{FLOOD} 250" in format_status(gather_status(gw.cfg))
        acker_broker = broker.start()
        acker = Acker(acker_broker.port)
        try:
            wait_for(lambda: len(acker.events(SMOKE)) == 2, 30, "the alarms after the outage")
            wait_for(lambda: len(acker.events(FLOOD)) >= 50, 30, "the flood's newest")
            flood = sorted({e["x"]["i"] for e in acker.events(FLOOD)})
            assert flood == list(range(250, 300))  # the newest 50 were kept
        finally:
            acker.close()
    finally:
        r.close()
