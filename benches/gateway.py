"""``anju bench gateway``: throughput, backlog replay, memory and CPU of one gateway.

Setup: two private Mosquitto brokers (LAN and uplink, ``anju.servers``); the gateway as a
subprocess (``python -m anju gateway run``) pinned to one CPU core; a small *acker* in this
process that subscribes to the uplink, decodes every batch and confirms it at once. The acker
stands in for the backend, so what is measured is the gateway (and the brokers), not
PostgreSQL. Devices publish QoS 1 telemetry on the LAN broker, 10 readings per message (a JSON
array, as the contract allows).

- ``sustained_readings_per_s``: readings published by the devices, through the gateway's
  outbox, to confirmed by the acker, divided by the wall time from first publish to last
  confirmation.
- ``replay_1m_s``: a backlog of 1,000,000 readings written into the outbox beforehand, then
  the gateway started with ``replay_rate: 0`` (no pacing): time until all are confirmed.
- ``peak_rss_mb``: the gateway's peak resident memory (``VmHWM`` in ``/proc``), over both runs.
- ``cpu_s_per_1k_readings``: the gateway's CPU time (user + system) per 1,000 readings during
  the sustained run.
- ``cpu_s_per_1k_single``: the same measure when devices send one reading per message, paced
  at 2,000 messages per second (``SINGLE_RATE``), the pattern of devices (and adapters) that
  report each reading on its own: what batching by time is for. The gateway's CPU time from
  the first publish to the last confirmation, per 1,000 readings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from anju.servers import PrivateMosquitto
from anju.uplink import COMPRESSED, ack_topic, encode_ack, record_body
from gateway.outbox import TELEMETRY, Outbox

GW = "gw-bench"
SINGLE_RATE = 2_000  # single-reading messages per second
DEVICES = [f"bench-dev-{i:03d}" for i in range(50)]
REPO = Path(__file__).resolve().parents[1]


class Acker:
    """Confirms every uplink batch (stands in for the backend). It reads only the sequence
    numbers (zlib, JSON): it shares a core with both brokers, and what it costs must not be
    what the benchmark measures (a full ``decode_batch`` made it the replay's bottleneck)."""

    def __init__(self, port: int) -> None:
        self.confirmed = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-acker")
        self.c.max_queued_messages_set(0)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *_: self.ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([("anju/gw/+/up", 1), ("anju/gw/+/up/e", 1)])
        self.c.loop_start()
        self.ready.wait(10)

    def _on_message(self, c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if payload[:1] == COMPRESSED:
            payload = zlib.decompress(payload[1:])
        doc = json.loads(payload)
        gw = doc["gw"]
        seqs = [r["seq"] for r in doc["recs"]]
        c.publish(ack_topic(gw), encode_ack(seqs), qos=1)
        with self.lock:
            self.confirmed += len(seqs)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def _start_gateway(cfg_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "anju",
                "--log-level",
                "WARNING",
                "gateway",
                "run",
                "--config",
                str(cfg_path),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=f,
            preexec_fn=lambda: _pin(0),
        )


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(0.01)


def _ready(status: Path) -> bool:
    try:
        doc = json.loads(status.read_text())
    except (OSError, ValueError):
        return False
    return bool(doc.get("lan_connected") and doc["uplink"]["connected"])


def _sustained(lan: PrivateMosquitto, acker: Acker, readings: int, pid: int) -> tuple[float, float]:
    per_msg = 10
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-devices")
    pub.max_inflight_messages_set(200)
    pub.connect("127.0.0.1", lan.port)
    pub.loop_start()
    ts = int(time.time() * 1000)
    payloads = []
    for i in range(readings // per_msg):
        dev = DEVICES[i % len(DEVICES)]
        arr = [
            {"ts": ts + i * per_msg + k, "metrics": {"floor": k, "door": "closed", "load_kg": 70.5}}
            for k in range(per_msg)
        ]
        payloads.append((f"anju/dev/{dev}/telemetry", json.dumps(arr)))
    with acker.lock:
        start_confirmed = acker.confirmed
    cpu0 = _cpu_s(pid)
    t0 = time.perf_counter()
    last = None
    for topic, body in payloads:
        last = pub.publish(topic, body, qos=1)
        # Keep paho's own queue short (a device would not hold thousands either).
        while len(pub._out_messages) > 2000:
            time.sleep(0.001)
    assert last is not None
    last.wait_for_publish(60)
    _wait(lambda: acker.confirmed - start_confirmed >= readings, 300, "the sustained run")
    elapsed = time.perf_counter() - t0
    cpu = _cpu_s(pid) - cpu0
    pub.disconnect()
    pub.loop_stop()
    return readings / elapsed, cpu / (readings / 1000)


def _single(lan: PrivateMosquitto, acker: Acker, seconds: float, pid: int) -> tuple[float, int]:
    """Paced single-reading messages: (gateway CPU-s per 1,000 readings, readings sent)."""
    n = int(SINGLE_RATE * seconds)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-single-devices")
    pub.max_inflight_messages_set(200)
    pub.connect("127.0.0.1", lan.port)
    pub.loop_start()
    ts = int(time.time() * 1000)
    payloads = [
        (
            f"anju/dev/{DEVICES[i % len(DEVICES)]}/telemetry",
            json.dumps({"ts": ts + i, "metrics": {"floor": i % 18, "door": "closed"}}),
        )
        for i in range(n)
    ]
    with acker.lock:
        start_confirmed = acker.confirmed
    tick = 0.01  # publish each 10 ms what the rate allows
    per_tick = SINGLE_RATE * tick
    cpu0 = _cpu_s(pid)
    t0 = time.perf_counter()
    last = None
    sent = 0
    k = 0
    while sent < n:
        k += 1
        due = min(n, int(k * per_tick))
        while sent < due:
            topic, body = payloads[sent]
            last = pub.publish(topic, body, qos=1)
            sent += 1
        sleep = t0 + k * tick - time.perf_counter()
        if sleep > 0:
            time.sleep(sleep)
    assert last is not None
    last.wait_for_publish(60)
    _wait(lambda: acker.confirmed - start_confirmed >= n, 120, "the single-reading run")
    cpu = _cpu_s(pid) - cpu0
    pub.disconnect()
    pub.loop_stop()
    return cpu / (n / 1000), n


def _fill(path: Path, n: int) -> None:
    ob = Outbox(path)
    ts = int(time.time() * 1000)
    chunk = 50_000
    for start in range(0, n, chunk):
        items = [
            (
                TELEMETRY,
                record_body(
                    device_id=DEVICES[i % len(DEVICES)],
                    kind="t",
                    ts=ts + i,
                    rx=ts + i,
                    gateway_timed=False,
                    payload={"m": {"floor": i % 18, "door": "closed", "load_kg": 70.5}},
                ),
            )
            for i in range(start, min(n, start + chunk))
        ]
        ob.append("bench-backlog", items, ts)
    ob.close()


def run(*, quick: bool) -> dict[str, Any]:
    sustained_n = 20_000 if quick else 300_000
    single_s = 5.0 if quick else 15.0
    backlog_n = 20_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="anju-bench-gw-") as d:
        tmp = Path(d)
        _pin(1)  # brokers, devices and acker on the other core; the gateway alone on core 0
        lan = PrivateMosquitto(tmp / "lan", name="lan").start()
        up = PrivateMosquitto(tmp / "up", name="uplink").start()
        acker = Acker(up.port)
        doc = {
            "gateway_id": GW,
            "lan": {"url": lan.url},
            "uplink": {"url": up.url, "backoff_base_s": 0.2, "backoff_cap_s": 1.0},
            "outbox": {
                "path": str(tmp / "outbox.sqlite3"),
                "replay_rate": 0,
                "window": 20_000,
                "batch_max": 1_000,
                "max_bytes": 2 * 1024**3,
            },
            "devices": DEVICES,
            "status_every_s": 0.2,
            "remote_config": {"enabled": False},
        }
        cfg_path = tmp / "gateway.yaml"
        cfg_path.write_text(yaml.safe_dump(doc))
        status = tmp / "outbox.sqlite3.status.json"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            gw = _start_gateway(cfg_path, tmp / "gateway.log")
            procs.append(gw)
            _wait(lambda: _ready(status), 30, "the gateway")
            rate, cpu_per_1k = _sustained(lan, acker, sustained_n, gw.pid)
            cpu_single, single_n = _single(lan, acker, single_s, gw.pid)
            hwm = _hwm_mb(gw.pid)
            gw.terminate()
            gw.wait(30)
            _fill(tmp / "outbox.sqlite3", backlog_n)
            status.unlink(missing_ok=True)
            with acker.lock:
                before = acker.confirmed
            t0 = time.perf_counter()
            gw = _start_gateway(cfg_path, tmp / "gateway.log")
            procs.append(gw)
            _wait(lambda: acker.confirmed - before >= backlog_n, 600, "the replay")
            replay_s = time.perf_counter() - t0
            hwm = max(hwm, _hwm_mb(gw.pid))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(30)
            acker.close()
            up.stop()
            lan.stop()
    return {
        "sustained_readings_per_s": round(rate),
        "replay_1m_s": round(replay_s * 1_000_000 / backlog_n, 2),
        "peak_rss_mb": round(hwm, 1),
        "cpu_s_per_1k_readings": round(cpu_per_1k, 4),
        "cpu_s_per_1k_single": round(cpu_single, 4),
        "readings_single": single_n,
        "single_messages_per_s": SINGLE_RATE,
        "readings_sustained": sustained_n,
        "readings_replayed": backlog_n,
        "readings_per_message": 10,
        "note": "an acker confirms every batch in place of the backend; gateway on one core",
    }
