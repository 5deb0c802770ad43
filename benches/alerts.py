"""``anju bench alerts``: alert latency under load, and rule-evaluation throughput on one core.

Latency: everything real, on this machine. A private PostgreSQL and Mosquitto
(``anju.servers``); the backend as it is deployed, ``python -m anju backend run``, in a process
of its own; simulated gateways in another process publishing quiet background telemetry on the
uplink at ``background_readings_per_s`` (20,000 readings/s in the full run); and, from this
process, probes: single fire-alarm events published on the uplink exactly as a gateway sends
them, each stamped with the time the "gateway received" it (the record's ``rx``), each on a
detector of its own. A subscriber here, on the fire brigade's topic
``anju/alerts/fire/330402/#`` (QoS 1), notes when each alert arrives. Latency is arrival minus
``rx``: uplink, ingest commit, rules, the alert stored with its audit entry, the publish and
the broker's delivery. Both ends use this machine's clock.

``background_readings_per_s`` is what the backend committed while the probes ran (its own
``anju_ingest_readings`` counter), not what was offered.

Throughput: ``benches.alerts_eval.throughput``, ``Engine.feed`` over a mixed stream on one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import yaml

from anju.now import now_ms
from anju.servers import PrivateMosquitto, PrivatePostgres, free_port, stop_process
from anju.uplink import encode_batch, record_body, up_topic
from benches.alerts_eval import throughput
from benches.alerts_load import background, bench_city, probe_id

FIRE_TOPIC = "anju/alerts/fire/330402/#"
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def _pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(q * len(s)) - 1)]


class _Probes:
    """Publishes fire alarms as gateways would and collects their alerts from the fire topic."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.boot = uuid.uuid4().hex
        self.seq: dict[str, int] = {}
        self.sent: dict[str, int] = {}  # device -> rx (ms)
        self.latency_ms: dict[str, float] = {}
        self.ready = asyncio.Event()
        self.all_in = asyncio.Event()  # every probe sent so far has its alert

    async def listen(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, socket_options=NODELAY) as c:
            await c.subscribe(FIRE_TOPIC, qos=1)
            self.ready.set()
            async for m in c.messages:
                now = time.time_ns() / 1e6
                assert isinstance(m.payload, bytes)
                a = json.loads(m.payload)
                dev = a["device_id"]
                if a["state"] == "raised" and dev in self.sent and dev not in self.latency_ms:
                    self.latency_ms[dev] = now - self.sent[dev]
                    if len(self.latency_ms) == len(self.sent):
                        self.all_in.set()

    async def send(self, client: aiomqtt.Client, gw: str, device: str) -> None:
        seq = self.seq[gw] = self.seq.get(gw, 0) + 1
        rx = now_ms()
        body = record_body(
            device_id=device, kind="e", ts=rx, rx=rx, gateway_timed=False, payload={"e": "alarm"}
        )
        self.sent[device] = rx
        self.all_in.clear()
        # As a gateway sends an alarm: a batch of events on its events topic.
        await client.publish(
            up_topic(gw, events=True), encode_batch(gw, [(seq, self.boot, body)]), qos=1
        )


async def _scrape(http: httpx.AsyncClient) -> tuple[float, dict[float, float]]:
    """The backend's committed readings, and its loop-lag histogram (bound -> count)."""
    text = (await http.get("/metrics")).text
    readings: float | None = None
    lag: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("anju_ingest_readings_total "):
            readings = float(line.split()[1])
        elif line.startswith('anju_loop_lag_seconds_bucket{le="'):
            le = line.split('"')[1]
            lag[math.inf if le == "+Inf" else float(le)] = float(line.split()[1])
    if readings is None:
        raise RuntimeError("the backend's /metrics has no anju_ingest_readings_total")
    return readings, lag


def _bucket_pct(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The histogram bucket bound (ms) under which a fraction ``q`` of the observations made
    between two scrapes fall."""
    bounds = sorted(after)
    total = after[math.inf] - before.get(math.inf, 0.0)
    for b in bounds:
        if after[b] - before.get(b, 0.0) >= q * total:
            return b * 1000
    return math.inf


async def _wait_ready(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the backend exited ({proc.returncode}); see {log}")
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the backend was not ready within 60 s; see {log}")


async def _scrape_all(https: list[httpx.AsyncClient]) -> tuple[float, dict[float, float]]:
    """Readings stored by every worker given; the loop lag of the first."""
    scraped = [await _scrape(h) for h in https]
    return sum(r for r, _ in scraped), scraped[0][1]


async def _measure(
    mqtt_port: int,
    api_ports: list[int],
    procs: list[subprocess.Popen[bytes]],
    log: Path,
    p: dict[str, Any],
) -> dict[str, Any]:
    """``api_ports``: the workers whose figures count (the leader; every active worker)."""
    probes = _Probes(mqtt_port)
    async with contextlib.AsyncExitStack() as stack, asyncio.TaskGroup() as tg:
        https = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
            )
            for port in api_ports
        ]
        for http, proc in zip(https, procs, strict=True):
            await _wait_ready(http, proc, log)
        listener = tg.create_task(probes.listen(), name="bench-alert-subscriber")
        await asyncio.wait_for(probes.ready.wait(), 10)
        sent = mp.get_context("spawn").Value("q", 0)
        bg = mp.get_context("spawn").Process(
            target=background,
            args=(mqtt_port, p["doc"], p["rate"], p["warmup_s"] + p["measure_s"] + 1, sent),
            name="bench-background",
        )
        bg.start()
        try:
            await asyncio.sleep(p["warmup_s"])
            (r0, lag0), t0 = await _scrape_all(https), time.monotonic()
            async with aiomqtt.Client("127.0.0.1", mqtt_port, socket_options=NODELAY) as pub:
                for i in range(p["probes"]):
                    target = t0 + i / p["probe_rate"]
                    await asyncio.sleep(max(0.0, target - time.monotonic()))
                    com = i % p["communities"]
                    await probes.send(pub, f"gw-c{com}", probe_id(com, i // p["communities"]))
            await asyncio.sleep(max(0.0, t0 + p["measure_s"] - time.monotonic()))
            (r1, lag1), t1 = await _scrape_all(https), time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(probes.all_in.wait(), 15)
        finally:
            bg.join(timeout=30)
            if bg.is_alive():
                bg.terminate()
            listener.cancel()
    lat = list(probes.latency_ms.values())
    if not lat:
        raise RuntimeError(f"no alert arrived for any of {len(probes.sent)} probes; see {log}")
    return {
        "latency_p50_ms": _pct(lat, 0.50),
        "latency_p99_ms": _pct(lat, 0.99),
        "latency_max_ms": max(lat),
        "background_readings_per_s": (r1 - r0) / (t1 - t0),
        "background_offered_readings_per_s": p["rate"],
        "probes": len(probes.sent),
        "probes_lost": len(probes.sent) - len(lat),
        # The backend's event loop: how late it ran what was due (bucket bounds).
        "backend_loop_lag_p50_ms_le": _bucket_pct(lag0, lag1, 0.50),
        "backend_loop_lag_p99_ms_le": _bucket_pct(lag0, lag1, 0.99),
    }


def _leader(ports: list[int], procs: list[subprocess.Popen[bytes]], log: Path) -> int:
    """The API port of the worker that leads (the one that answers; standbys serve nothing)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for port, proc in zip(ports, procs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"a backend worker exited ({proc.returncode}); see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                    return port
        time.sleep(0.2)
    raise RuntimeError(f"no backend worker answered within 60 s; see {log}")


def latency(*, quick: bool, workers: int = 1, shared: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = (
        {"communities": 4, "per_kind": 2, "rate": 2_000, "warmup_s": 2, "measure_s": 3}
        if quick
        else {"communities": 40, "per_kind": 27, "rate": 20_000, "warmup_s": 10, "measure_s": 60}
    )
    p["probe_rate"] = 4 if quick else 8  # per s, over every community: below a storm
    p["probes"] = int(p["probe_rate"] * p["measure_s"])
    per_com = -(-p["probes"] // p["communities"])
    p["doc"] = bench_city(p["communities"], p["per_kind"], per_com)
    with tempfile.TemporaryDirectory(prefix="anju-bench-alerts-") as tmp:
        d = Path(tmp)
        registry, alerting, log = d / "city.yaml", d / "alerting.yaml", d / "backend.log"
        registry.write_text(yaml.safe_dump(p["doc"], allow_unicode=True))
        # No escalation during the run: every probe stays a single "raised" change.
        alerting.write_text(yaml.safe_dump({"fire_ack_deadline_s": 3600}))
        pg = PrivatePostgres(d / "pg").start()
        broker = PrivateMosquitto(d / "mqtt").start()
        ports = [free_port() for _ in range(workers)]
        procs: list[subprocess.Popen[bytes]] = []
        # Several workers (docs/scaling.md): one group; the leader serves, the others wait;
        # or (shared) every worker active, each with its own client id.
        group = ["--group", "anju-bench"] if workers > 1 else []
        try:
            env = {**os.environ, "ANJU_ALERTING": str(alerting)}
            with log.open("wb") as out:
                for i, api_port in enumerate(ports):
                    active = ["--shared", "--client-id", f"anju-bench-{i}"] if shared else []
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "anju", "backend", "run", "--db", pg.url(),
                         "--mqtt", broker.url, "--registry", str(registry),
                         "--api-port", str(api_port), *group, *active],
                        env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    ))  # fmt: skip
            if shared and workers > 1:
                apis, counted = ports, procs
            else:
                lead = _leader(ports, procs, log) if workers > 1 else ports[0]
                apis, counted = [lead], [procs[ports.index(lead)]]
            figures = asyncio.run(_measure(broker.port, apis, counted, log, p))
            return {**figures, "workers": workers, "shared": shared and workers > 1}
        finally:
            for proc in procs:
                stop_process(proc)
            broker.stop()
            pg.destroy()


def run(*, quick: bool, workers: int = 1, shared: bool = False) -> dict[str, Any]:
    """The figures of issue 5: alert latency under load, and rule throughput per core;
    ``workers``: backend workers in one group (issue 11; one leads, the others stand by, or
    with ``shared`` every one active on its partitions of the city)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request
    figures = throughput(quick=quick)  # first, on a machine that is otherwise idle
    return {**latency(quick=quick, workers=workers, shared=shared), **figures}
