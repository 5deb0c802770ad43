"""`anju demo` as a user runs it: endpoints first, alerts live, everything stopped on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.integration


def _processes_mentioning(text: str) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def test_demo_raises_the_scenario_alerts_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anju",
            "demo",
            "--data-dir",
            str(data),
            "--duration",
            "120",
            "--time-scale",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoints = json.loads(proc.stdout.readline())
        assert set(endpoints) >= {"api", "alerts_mqtt", "uplink_mqtt", "lan_mqtt", "database"}
        assert "gw-jx-nh-0001-a" in endpoints["lan_mqtt"]

        got: dict[str, str] = {}
        done = threading.Event()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            p = json.loads(msg.payload)
            got[p["type"]] = msg.topic
            if {"elevator.trapped", "fire.alarm"} <= set(got):
                done.set()

        port = int(endpoints["alerts_mqtt"].rsplit(":", 1)[1])
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="department-under-test")
        sub.on_connect = lambda c, *_: c.subscribe(
            [("anju/alerts/market_supervision/#", 1), ("anju/alerts/fire/#", 1)]
        )
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        try:
            assert done.wait(60), f"alerts received: {got}"
        finally:
            sub.loop_stop()
            sub.disconnect()
        assert got["elevator.trapped"].startswith("anju/alerts/market_supervision/330402/")
        assert got["fire.alarm"].startswith("anju/alerts/fire/330402/")

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - started < 10, err
        assert proc.returncode == 0, err
        assert "elevator.trapped" in out and "fire.alarm" in out
        assert _processes_mentioning(str(data)) == []
        assert _processes_mentioning(str(_pgdata(data))) == []
        assert (data / "logs" / "backend.log").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        elsewhere = _pgdata(data)
        if elsewhere != data / "postgres" / "pgdata":
            shutil.rmtree(elsewhere.parent, ignore_errors=True)


def _pgdata(data: Path) -> Path:
    """Where the demo's PostgreSQL cluster is (moved out when root cannot share the folder)."""
    marker = data / "postgres" / "PGDATA-IS-ELSEWHERE"
    return Path(marker.read_text().strip()) if marker.exists() else data / "postgres" / "pgdata"
