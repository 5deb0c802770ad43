"""The LAN intake's hand-over to its committer (a deque and a condition), its linger and the
PUBACK-after-commit rule, on a real LAN Mosquitto with a plain paho device publishing.

Hooks (no fakes of the system under test): the outbox's ``append`` is wrapped to pause the
committer inside a commit; the LAN client's socket writes are watched so that each PUBACK is
seen as it leaves, together with what the outbox has committed at that moment (read through a
separate SQLite connection, which sees committed rows only).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from anju.servers import PrivateMosquitto
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.intake import LanIntake
from gateway.metrics import GatewayMetrics
from gateway.outbox import EVENTS, TELEMETRY, Outbox

DEV = "elev-1"


def until(check: Callable[[], bool], what: str, within: float = 60.0) -> None:
    """Wait for a state (polled); the bound is only there so that a failure ends."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Rig:
    """A LanIntake on ``lan_broker`` with a paused-able commit and PUBACKs watched."""

    def __init__(self, tmp_path: Path, broker: PrivateMosquitto, **outbox: Any) -> None:
        cfg = GatewayConfig.model_validate(
            {
                "gateway_id": "gw-1",
                "lan": {"url": broker.url},
                "uplink": {"url": "mqtt://127.0.0.1:1"},  # (not used here)
                "outbox": {"path": str(tmp_path / "o.sqlite3"), **outbox},
                "devices": [DEV],
            }
        )
        self.path = cfg.outbox.path
        self.outbox = Outbox(self.path)
        self.intake = LanIntake(
            cfg, self.outbox, GatewayMetrics(), SystemClock(), "boot-1", lambda _e: None
        )
        self.release = threading.Event()
        self.release.set()
        self.groups: list[list[int]] = []  # the lanes of each commit's items, at its start
        self.pubacks: list[tuple[list[int], int]] = []  # (ids written, rows committed then)
        self._lock = threading.Lock()
        real_append = self.outbox.append

        self.refuse: Callable[[str], bool] | None = None  # a body the outbox refuses

        def append(boot: str, messages: Any, *a: Any, **k: Any) -> Any:
            with self._lock:
                self.groups.append([lane for m in messages for lane, _ in m.items])
            self.release.wait(60)
            refuse = self.refuse
            if refuse and any(refuse(body) for m in messages for _, body in m.items):
                raise ValueError("refused (test)")
            return real_append(boot, messages, *a, **k)

        self.outbox.append = append  # type: ignore[method-assign]
        self.handed = 0  # messages the LAN thread handed over to the committer
        self.received: list[int] = []  # their packet ids (QoS 1), in the order they came
        handoff = self.intake._queue
        real_put = handoff.put

        def put(item: Any, timeout: float) -> None:
            real_put(item, timeout)
            if item is not None:
                with self._lock:
                    self.handed += 1
                    if item.qos:
                        self.received.append(item.incoming.mid)

        handoff.put = put  # type: ignore[method-assign]
        client = self.intake.client
        real_send = client._sock_send

        def send(buf: Any) -> int:
            data = bytes(buf)
            if data[:2] == b"\x40\x02" and len(data) % 4 == 0:  # (ack_many's PUBACKs)
                mids = [int.from_bytes(data[k + 2 : k + 4]) for k in range(0, len(data), 4)]
                with self._lock:
                    self.pubacks.append((mids, self.committed_rows()))
            return int(real_send(buf))

        client._sock_send = send  # type: ignore[method-assign]
        self.device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEV)
        self.broker = broker

    def committed_rows(self) -> int:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return int(db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        finally:
            db.close()

    def bodies(self) -> list[tuple[int, dict[str, Any]]]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT lane, body FROM records ORDER BY seq").fetchall()
        finally:
            db.close()
        return [(lane, json.loads(body)) for lane, body in rows]

    def acked(self) -> int:
        with self._lock:
            return sum(len(m) for m, _ in self.pubacks)

    def start(self) -> None:
        self.intake.start()
        until(self.intake.ready.is_set, "the intake's subscription")
        self.device.connect("127.0.0.1", self.broker.port)
        self.device.loop_start()

    def publish(self, kind: str, body: dict[str, Any]) -> None:
        info = self.device.publish(f"anju/dev/{DEV}/{kind}", json.dumps(body), qos=1)
        info.wait_for_publish(30)

    def waiting(self) -> int:
        """Messages the LAN thread handed over and the committer has not taken."""
        return len(self.intake._queue._items)

    def stop(self) -> None:
        self.release.set()
        self.device.disconnect()
        self.device.loop_stop()
        self.intake.stop()
        self.outbox.close()


@pytest.fixture
def rig_factory(tmp_path: Path, lan_broker: PrivateMosquitto) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**outbox: Any) -> Rig:
        r = Rig(tmp_path, lan_broker, **outbox)
        rigs.append(r)
        r.start()
        return r

    yield make
    for r in rigs:
        r.stop()


def reading(i: int) -> dict[str, Any]:
    return {"ts": 1_764_122_400_000 + i, "metrics": {"floor": i}}


def test_no_puback_before_the_commit_and_every_puback_after_its_row(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory()
    rig.release.clear()  # the committer stops inside its next commit
    for i in range(5):
        rig.publish("telemetry", reading(i))
    # Every message reached the intake: in the paused commit's group or waiting behind it.
    until(lambda: bool(rig.groups) and len(rig.groups[0]) + rig.waiting() == 5, "the 5 messages")
    assert rig.pubacks == [] and rig.committed_rows() == 0
    rig.release.set()
    until(lambda: rig.acked() == 5, "the 5 PUBACKs")
    total = 0
    for mids, rows in rig.pubacks:
        total += len(mids)
        assert rows >= total, "a PUBACK left before its message's row was committed"
    assert [b["m"]["floor"] for _, b in rig.bodies()] == list(range(5))


def test_an_event_ends_the_telemetry_linger(rig_factory: Callable[..., Rig]) -> None:
    """With a linger far longer than the test may take, telemetry waits for company; the event
    that arrives is committed at once, together with the telemetry lingering before it."""
    rig = rig_factory()
    rig.intake._linger_s = 3600.0  # (beyond the configuration's bound: a test's lever)
    for i in range(3):
        rig.publish("telemetry", reading(i))
    # All three handed over; the committer lingers with them (in its group or still waiting
    # in the hand-over) and commits nothing.
    until(lambda: rig.handed == 3, "the telemetry handed to the lingering committer")
    assert rig.groups == [] and rig.pubacks == []
    rig.publish("event", {"ts": 1_764_122_400_500, "type": "alarm_button", "data": {}})
    until(lambda: rig.acked() == 4, "the event's commit (not the linger's end)")
    assert rig.groups == [[TELEMETRY, TELEMETRY, TELEMETRY, EVENTS]]
    assert [lane for lane, _ in rig.bodies()] == [TELEMETRY, TELEMETRY, TELEMETRY, EVENTS]
    assert rig.pubacks[0][1] == 4


def test_a_full_hand_over_holds_the_lan_thread_and_loses_nothing(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(queue_max=10, commit_max=7)
    rig.release.clear()
    n = 40
    for i in range(n):
        info = rig.device.publish(f"anju/dev/{DEV}/telemetry", json.dumps(reading(i)), qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
    until(lambda: bool(rig.groups) and rig.waiting() == 10, "a full hand-over")
    assert rig.pubacks == [] and rig.committed_rows() == 0
    rig.release.set()
    until(lambda: rig.acked() == n, "every PUBACK")
    total = 0
    for mids, rows in rig.pubacks:
        total += len(mids)
        assert rows >= total
    assert [b["m"]["floor"] for _, b in rig.bodies()] == list(range(n))
    assert all(len(g) <= 7 for g in rig.groups)


def test_pubacks_keep_their_order_when_the_outbox_refuses_one_message(
    rig_factory: Callable[..., Rig],
) -> None:
    """A group the outbox refuses is stored one message at a time; the message it refuses
    alone is rejected (and acknowledged). MQTT 3.1.1 (4.6): PUBACKs go in the order the
    PUBLISH packets came, so the refused message's PUBACK keeps its place."""
    rig = rig_factory()
    rig.intake._linger_s = 3600.0  # (one group: the three readings and the event)
    rig.refuse = lambda body: '"floor":1}' in body
    for i in range(3):
        rig.publish("telemetry", reading(i))
    until(lambda: rig.handed == 3, "the telemetry handed over")
    rig.publish("event", {"ts": 1_764_122_400_500, "type": "alarm_button", "data": {}})
    until(lambda: rig.acked() == 4, "the four PUBACKs")
    written = [mid for ids, _ in rig.pubacks for mid in ids]
    assert written == rig.received
    assert [b["m"]["floor"] for lane, b in rig.bodies() if lane == TELEMETRY] == [0, 2]
    assert rig.intake.metrics.rejected.labels("unstorable")._value.get() == 1
