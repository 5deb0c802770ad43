"""``anju bench comeback``: how fast queued alarms get through once the uplink broker, or a
backend worker, is back (issue 16 item 4).

Two parts:

- **The reconnect policy over a thousand gateways** (``sim_*``, pure, seeded): every gateway
  loses the broker at the same moment; the broker is back after ``outage_s``; each gateway's
  next attempt at or after that moment is when it is back. Figures for the policy in use
  (``gateway.link.reconnect_delays``: decorrelated jitter capped at 4 s for the first 300 s)
  and the one before (full jitter capped at 60 s): p50/p99/max seconds from the broker being
  back to the gateway being connected, and the most gateways connecting within one second.
- **Real gateways on a real Mosquitto** (``broker_*``, ``worker_*``): ``gateways`` gateways in
  this process, one LAN broker, one uplink broker and a stand-in for the backend (subscribes,
  confirms). (1) The uplink broker is stopped, each gateway stores an alarm, the broker is
  started again on the same port: seconds from its start to each alarm reaching the stand-in.
  (2) The stand-in takes an alarm from every gateway and dies without confirming (a killed
  worker), a new one starts: seconds from its subscription to each alarm reaching it (the
  events' 2 s resend; telemetry keeps 10 s).
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from anju.backoff import backoff
from anju.now import now_ms
from anju.servers import PrivateMosquitto
from anju.uplink import ack_topic, decode_batch, encode_ack, record_body
from gateway.config import GatewayConfig
from gateway.link import reconnect_delays
from gateway.outbox import EVENTS
from gateway.service import Gateway


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class _SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def simulate(policy: str, gateways: int, outage_s: float, seed: int = 1) -> dict[str, float]:
    """Seconds from the broker's return to each gateway's reconnection, and the busiest
    second; ``policy`` is ``new`` (reconnect_delays) or ``old`` (full jitter, 60 s cap)."""
    rng = random.Random(seed)
    back: list[float] = []
    for _ in range(gateways):
        clock = _SimClock()
        r = random.Random(rng.random())
        delays: Iterator[float] = (
            reconnect_delays(1.0, 4.0, 300.0, 60.0, rng=r, clock=clock)
            if policy == "new"
            else backoff(1.0, 60.0, r)
        )
        while clock.t < outage_s:
            clock.t += next(delays)
        back.append(clock.t - outage_s)
    per_second: dict[int, int] = {}
    for b in back:
        per_second[int(b)] = per_second.get(int(b), 0) + 1
    return {
        "p50_s": _pct(back, 0.5),
        "p99_s": _pct(back, 0.99),
        "max_s": max(back),
        "busiest_second": max(per_second.values()),
    }


class _Backend:
    """Stands in for the backend: records when each gateway's alarm ``n`` first arrives and
    confirms (unless ``confirm`` is false: a worker that dies before committing)."""

    def __init__(self, port: int, *, confirm: bool = True) -> None:
        self.confirm = confirm
        self.seen: dict[tuple[str, int], float] = {}
        self.ready = threading.Event()
        self.lock = threading.Lock()
        # One persistent session (as a backend worker keeps): what arrives while it is away,
        # or before it is back after the broker, waits for it in the broker.
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-backend", protocol=mqtt.MQTTv5
        )
        self.c.on_connect = lambda c, *_: c.subscribe([("anju/gw/+/up/e", 1), ("anju/gw/+/up", 1)])
        self.c.on_subscribe = lambda *_: self.ready.set()
        self.c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.c.loop_start()

    def _on_message(self, c: mqtt.Client, _u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        gw, recs = decode_batch(m.topic, bytes(m.payload))
        with self.lock:
            for r in recs:
                if r.kind == "e" and r.data is not None and "n" in r.data:
                    self.seen.setdefault((gw, int(r.data["n"])), now)
        if self.confirm:
            c.publish(ack_topic(gw), encode_ack([r.seq for r in recs]), qos=1)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _wait(check: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _alarm(gw: Gateway, n: int) -> None:
    now = now_ms()
    dev = gw.cfg.devices[0]
    body = record_body(
        device_id=dev,
        kind="e",
        ts=now,
        rx=now,
        gateway_timed=False,
        payload={"e": "alarm", "x": {"n": n}},
    )
    gw.outbox.append(gw.boot_id, [(EVENTS, body)], now)
    gw._wake.set()


def measure(gateways: int, outage_s: float, dead_s: float, folder: Path) -> dict[str, Any]:
    lan = PrivateMosquitto(folder / "lan", name="lan").start()
    up = PrivateMosquitto(folder / "up", name="uplink").start()
    gws: list[Gateway] = []
    threads: list[threading.Thread] = []
    stop = threading.Event()
    backend = _Backend(up.port)
    out: dict[str, Any] = {}
    try:
        for i in range(gateways):
            cfg = GatewayConfig.model_validate(
                {
                    "gateway_id": f"gw-cb-{i}",
                    "lan": {"url": lan.url},
                    "uplink": {"url": up.url},
                    "outbox": {"path": str(folder / f"gw-{i}.sqlite3")},
                    "devices": [f"dev-cb-{i}"],
                    "clock": {"sync": "assume"},
                    "status_every_s": 5,
                }
            )
            gw = Gateway(cfg)
            gws.append(gw)
            t = threading.Thread(target=gw.run, args=(stop,), name=f"gw-cb-{i}", daemon=True)
            threads.append(t)
            t.start()
        if not _wait(lambda: all(g.link.ready.is_set() for g in gws), 60):
            raise RuntimeError("the gateways did not connect")
        backend.ready.wait(10)
        # (1) The uplink broker goes away for outage_s; an alarm is queued meanwhile.
        up.stop()
        _wait(lambda: not any(g.link.ready.is_set() for g in gws), 30)
        for g in gws:
            _alarm(g, 1)
        time.sleep(outage_s)
        backend.close()
        back = time.monotonic()
        up.start()
        backend = _Backend(up.port)
        got = _wait(lambda: len(backend.seen) >= gateways, 120)
        lat = [t - back for (_g, n), t in backend.seen.items() if n == 1]
        out |= {
            "broker_outage_s": outage_s,
            "broker_p50_s": _pct(lat, 0.5),
            "broker_p99_s": _pct(lat, 0.99),
            "broker_max_s": max(lat) if lat else float("nan"),
            "broker_lost": 0 if got else gateways - len(lat),
        }
        # (2) A worker takes an alarm from every gateway and dies before confirming.
        backend.close()
        taker = _Backend(up.port, confirm=False)
        taker.ready.wait(10)
        for g in gws:
            _alarm(g, 2)
        _wait(lambda: sum(1 for k in taker.seen if k[1] == 2) >= gateways, 30)
        taker.close()
        time.sleep(dead_s)
        backend = _Backend(up.port)
        backend.ready.wait(10)
        back = time.monotonic()
        got = _wait(lambda: sum(1 for k in backend.seen if k[1] == 2) >= gateways, 60)
        lat = [max(0.0, t - back) for (_g, n), t in backend.seen.items() if n == 2]
        out |= {
            "worker_dead_s": dead_s,
            "worker_p50_s": _pct(lat, 0.5),
            "worker_p99_s": _pct(lat, 0.99),
            "worker_max_s": max(lat) if lat else float("nan"),
            "worker_lost": 0 if got else gateways - len(lat),
        }
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        backend.close()
        up.stop()
        lan.stop()
    return out


def run(quick: bool) -> dict[str, Any]:
    gateways = 10 if quick else 40
    out: dict[str, Any] = {"gateways": gateways, "sim_gateways": 1000}
    for outage in (10.0, 60.0):
        for policy in ("new", "old"):
            for k, v in simulate(policy, 1000, outage).items():
                out[f"sim_{policy}_{int(outage)}s_{k}"] = v
    with tempfile.TemporaryDirectory(prefix="anju-comeback-") as d:
        out |= measure(gateways, 5.0 if quick else 20.0, 3.0, Path(d))
    return out
