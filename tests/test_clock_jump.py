"""A gateway's wall clock that jumps (gateway/clock.py): the step filter and the test-only skew
file (``ANJU_GATEWAY_CLOCK_SKEW_FILE``) that ``anju chaos``'s ``clock_jump`` uses.

A step of a trusted clock is held back until it has held for ``STEP_ACCEPT_S``: a clock two
hours ahead or a day behind that comes back changes no record's time, so the backend blames no
device for a skew (``device.clock_skew``), keeps the device's own correct times (a trusted
clock a day behind would otherwise call them "a day ahead" and replace them), and pushes no
liveness into the future. Unit tests on a fake clock; one on a real gateway process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

import gateway.clock as clock_mod
from anju.servers import PrivateMosquitto
from anju.uplink import Record, decode_batch
from gateway.clock import SKEW_FILE_ENV, STEP_ACCEPT_S, SystemClock
from gateway.validate import Accepted, decode_device_message

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_800_000_000_000  # 2027-01-15


class Fake:
    """The system's wall clock and boot-time clock, moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wall_ms = T0
        self.steady_ms = 5_000
        monkeypatch.setattr(clock_mod.time, "time_ns", lambda: self.wall_ms * 1_000_000)
        monkeypatch.setattr(clock_mod, "_steady_ns", lambda: self.steady_ms * 1_000_000)

    def tick(self, ms: int) -> None:
        self.wall_ms += ms
        self.steady_ms += ms


def test_a_step_of_a_trusted_clock_is_held_back_and_its_return_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SKEW_FILE_ENV, raising=False)
    f = Fake(monkeypatch)
    c = SystemClock("plausible")
    assert c.skew is None and c.trusted() and c.wall_ms() == T0
    f.tick(500)
    f.wall_ms += 300  # NTP's slewing: followed
    assert c.wall_ms() == T0 + 800
    f.wall_ms += 2 * HOUR  # a jump ahead: time goes on from the last trusted time
    for _ in range(5):
        f.tick(1_000)
        assert c.wall_ms() == f.wall_ms - 2 * HOUR
    assert c.steps_held == 1 and c.trusted()
    f.wall_ms -= 2 * HOUR + DAY  # then a day behind: still held back
    f.tick(1_000)
    assert c.wall_ms() == f.wall_ms + DAY and c.steps_held == 2
    f.wall_ms += DAY  # back: the same clock as if nothing happened
    f.tick(1_000)
    assert c.wall_ms() == f.wall_ms and c.stamp().offset_ms == f.wall_ms - c.mono_ms()


def test_a_step_that_holds_is_taken_and_a_clock_being_set_is_taken_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SKEW_FILE_ENV, raising=False)
    f = Fake(monkeypatch)
    c = SystemClock("plausible")
    assert c.trusted()
    f.wall_ms += HOUR
    f.tick(1_000)
    assert c.wall_ms() == f.wall_ms - HOUR
    f.tick(int(STEP_ACCEPT_S * 1000) - 1_000)
    assert c.wall_ms() == f.wall_ms - HOUR  # not yet
    f.tick(1_000)
    assert c.wall_ms() == f.wall_ms  # held for STEP_ACCEPT_S: taken
    f.tick(1_000)
    assert c.wall_ms() == f.wall_ms

    # A Pi at boot: 1970 (never trusted); NTP sets the clock: taken at once.
    f.wall_ms = 10_000
    early = SystemClock("plausible", not_before_ms=T0 - DAY)
    assert not early.trusted()
    f.wall_ms = T0 + DAY
    f.tick(10)
    assert early.wall_ms() == f.wall_ms and early.trusted() and early.steps_held == 0


def test_a_device_time_is_kept_while_the_gateway_clock_is_a_day_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the filter a trusted gateway clock a day behind takes the device's correct time
    for one "more than a day ahead" and stores the gateway's wrong one, flagged."""
    monkeypatch.delenv(SKEW_FILE_ENV, raising=False)
    f = Fake(monkeypatch)
    c = SystemClock("plausible")
    assert c.trusted()
    f.wall_ms -= DAY
    f.tick(2_000)
    rx = c.wall_ms()
    assert rx == T0 + 2_000
    body = json.dumps({"ts": T0 + 1_990, "type": "fire", "data": {}}).encode()
    [item] = decode_device_message(
        "anju/dev/p-1/event", body, known={"p-1"}, rx_ms=rx, clock_trusted=c.trusted()
    )
    assert isinstance(item, Accepted), item
    assert (item.ts, item.gateway_timed, item.time_flag) == (T0 + 1_990, False, None)


def test_the_skew_file_is_read_when_it_changes_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    skew = tmp_path / "skew"
    skew.write_text("0")
    monkeypatch.setenv(SKEW_FILE_ENV, str(skew))
    f = Fake(monkeypatch)
    with caplog.at_level("WARNING", logger="anju.gateway.clock"):
        c = SystemClock("assume")
    assert SKEW_FILE_ENV in caplog.text
    assert c.wall_ms() == T0
    skew.write_text(str(2 * HOUR))
    os.utime(skew, ns=(1, 1))  # a new modification time
    f.tick(100)
    assert c.skew is not None and c.skew.offset(f.steady_ms * 1_000_000) == 0  # not looked at yet
    f.tick(1_000)
    assert c.skew.offset(f.steady_ms * 1_000_000) == 2 * HOUR
    assert c.wall_ms() == f.wall_ms  # "assume" is trusted from the start: the step is held back
    assert c.steps_held == 1
    skew.write_text("garbage")
    os.utime(skew, ns=(2, 2))
    f.tick(1_000)
    assert c.skew.offset(f.steady_ms * 1_000_000) == 0


# ---- a real gateway process --------------------------------------------------------------

GW = "gw-clock-jump"
DEV = "dev-clock-jump"


class Uplink:
    """Every record the gateway sends, as the backend would decode it (never acknowledged:
    the gateway resends, which the test ignores by keeping the first copy)."""

    def __init__(self, port: int) -> None:
        self.records: dict[int, Record] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="uplink-watcher")
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(f"anju/gw/{GW}/up/#", qos=1)
        self.c.subscribe(f"anju/gw/{GW}/up", qos=1)
        self.c.loop_start()

    def _on(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        _gw, recs = decode_batch(msg.topic, bytes(msg.payload))
        with self.lock:
            for r in recs:
                self.records.setdefault(r.seq, r)

    def of(self, kind: str, ts: int) -> Record | None:
        with self.lock:
            return next((r for r in self.records.values() if r.kind == kind and r.ts == ts), None)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_real_gateway_whose_clock_jumps_sends_true_times(tmp_path: Path) -> None:
    lan = PrivateMosquitto(tmp_path / "lan", name="LAN").start()
    up = PrivateMosquitto(tmp_path / "up", name="uplink").start()
    skew = tmp_path / "skew"
    skew.write_text("0")
    doc = {
        "gateway_id": GW,
        "lan": {"url": lan.url},
        "uplink": {"url": up.url},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "devices": [DEV],
        "status_every_s": 0.2,
    }
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    log = tmp_path / "gateway.log"
    watcher = Uplink(up.port)
    dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=DEV)
    dev.connect("127.0.0.1", lan.port)
    dev.loop_start()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anju", "gateway", "run", "--config", str(cfg)],
            env={**os.environ, SKEW_FILE_ENV: str(skew)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:

        def send(kind: str) -> int:
            ts = int(time.time() * 1000)
            body = (
                {"ts": ts, "metrics": {"t": 1}}
                if kind == "t"
                else {"ts": ts, "type": "fire", "data": {}}
            )
            topic = f"anju/dev/{DEV}/{'telemetry' if kind == 't' else 'event'}"
            dev.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
            return ts

        def arrived(kind: str, ts: int) -> Record:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if (r := watcher.of(kind, ts)) is not None:
                    return r
                if proc.poll() is not None:
                    pytest.fail(log.read_text(errors="replace")[-2000:])
                time.sleep(0.1)
            pytest.fail(f"no record {kind}@{ts} on the uplink; {log.read_text()[-2000:]}")

        status = Path(doc["outbox"]["path"] + ".status.json")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if json.loads(status.read_text()).get("lan_connected"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        time.sleep(0.5)  # its subscription, after its connection
        first = arrived("t", send("t"))  # the clock is trusted and anchored
        assert abs(first.rx - first.ts) < 5_000
        for jump in (2 * HOUR, -DAY, 0):
            skew.write_text(str(jump))
            time.sleep(1.5)  # the file is looked at once a second
            for kind in ("t", "e"):
                ts = send(kind)
                r = arrived(kind, ts)
                # The device's own time, not replaced; the gateway's receive time true.
                assert (r.ts, r.gateway_timed, r.time_flag) == (ts, False, None), r
                assert abs(r.rx - ts) < 5_000, (jump, r)
        text = log.read_text(errors="replace")
        assert SKEW_FILE_ENV in text and "stepped by +7200 s: held back" in text
        assert "back from its step" in text
    finally:
        proc.terminate()
        proc.wait(20)
        dev.loop_stop()
        dev.disconnect()
        watcher.c.loop_stop()
        watcher.c.disconnect()
        lan.stop()
        up.stop()
