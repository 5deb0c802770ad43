"""The city of a chaos run: servers, processes, probe devices, simulated gateways, subscribers,
and the faults, all reusing ``anju demo``'s pieces (``_Children``, ``PrivateMosquitto``,
``PrivatePostgres``).

The city is deployed as ``anju demo`` deploys one, secure by default (``anju provision``'s CA,
passwords and ACLs, client id = user name on every broker, TLS on the uplink broker): the
gateways, the backend, the simulators, the probe devices (each device its own LAN user), the
simulated gateways (each its own uplink user) and the departments (each its own subscriber)
log in as what they are, so the guarantees are proven on the configuration people deploy.
``insecure`` (``anju chaos --insecure``) is the old anonymous, clear-text city.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from anju import acl
from anju.chaos.verdict import Alarm, Fault, Received
from anju.demo import _anju, _Children, _private_file, _provision, _wait_http
from anju.errors import AnjuError
from anju.now import now_ms
from anju.provision.model import ProvisionResult
from anju.registry import CityIndex, DeviceInfo
from anju.servers import PrivateMosquitto, PrivatePostgres, free_port
from anju.uplink import ack_topic, decode_ack, encode_batch, record_body, up_topic
from backend.ingest.writer import EXIT_AFTER_COMMIT_ENV
from gateway.clock import SKEW_FILE_ENV


@dataclass(frozen=True, slots=True)
class Login:
    """How a harness client logs in: anonymous (insecure city), or a provisioned user, over
    TLS with the city's CA on the uplink broker."""

    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None


def client(
    client_id: str, login: Login, *, clean_session: bool = True, userdata: Any = None
) -> mqtt.Client:
    """A paho client logged in as ``login`` (its user name is its client id on a provisioned
    broker, which binds the two)."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=login.username or client_id,
        clean_session=clean_session,
        userdata=userdata,
    )
    if login.username:
        c.username_pw_set(login.username, login.password)
    if login.ca_file is not None:
        c.tls_set(ca_certs=str(login.ca_file))
    return c


class Proxy:
    """A TCP forwarder on loopback in front of the uplink broker for one gateway, so that one
    gateway's uplink can be cut (connections dropped, new ones refused) while the others stay
    up."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._srv = socket.create_server(("127.0.0.1", self.port))
        self._srv.settimeout(0.5)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy").start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except OSError:
                continue
            if not self.up.is_set():
                c.close()
                continue
            try:
                s = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                c.close()
                continue
            with self._lock:
                self._conns += [c, s]
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            a.settimeout(None)
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            with contextlib.suppress(OSError):
                x.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._srv.close()


class Probe:
    """Devices of one real gateway, published on its LAN broker by the harness: telemetry with a
    per-device ``seq`` metric (recorded once the LAN broker acknowledged it, QoS 1), and fire
    panel alarms (``fire`` then ``reset``)."""

    def __init__(self, port: int, devices: list[str], logins: dict[str, Login]) -> None:
        self.devices = devices
        self.acked: list[tuple[str, int]] = []
        self._next = dict.fromkeys(devices, 0)
        self._lock = threading.Lock()
        self.clients: dict[str, mqtt.Client] = {}
        for dev in devices:  # each device its own LAN user (it may publish only as itself)
            c = client(f"chaos-probe-{dev}", logins[dev])
            c.connect("127.0.0.1", port)
            c.loop_start()
            self.clients[dev] = c

    def reading(self, dev: str) -> None:
        with self._lock:
            self._next[dev] += 1
            seq = self._next[dev]
        body = {"ts": now_ms(), "metrics": {"seq": seq}}
        info = self.clients[dev].publish(f"anju/dev/{dev}/telemetry", json.dumps(body), qos=1)
        try:
            info.wait_for_publish(5)
        except (RuntimeError, ValueError):
            return
        if info.is_published():
            with self._lock:
                self.acked.append((dev, seq))

    def event(self, dev: str, etype: str, ts: int, data: dict[str, Any] | None = None) -> bool:
        body = {"ts": ts, "type": etype, "data": data or {}}
        info = self.clients[dev].publish(f"anju/dev/{dev}/event", json.dumps(body), qos=1)
        try:
            info.wait_for_publish(5)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def raw(self, dev: str, payload: bytes) -> None:
        self.clients[dev].publish(f"anju/dev/{dev}/telemetry", payload, qos=1)

    def close(self) -> None:
        for c in self.clients.values():
            c.loop_stop()
            c.disconnect()


class SimGateway:
    """A gateway the harness plays on the uplink (the communities without a real gateway
    process): records are acknowledged to the device when they enter this in-memory outbox,
    and sent until the backend acknowledges them. ``offline`` holds them back (an uplink cut);
    coming back sends the whole backlog at once (a replay storm)."""

    def __init__(
        self, gw_id: str, port: int, devices: list[str], login: Login, batch: int = 200
    ) -> None:
        self.id = gw_id
        self.devices = devices
        self.batch = batch
        self.boot = uuid.uuid4().hex[:12]
        self.seq = 0
        self.pending: dict[int, tuple[str, bool]] = {}  # seq -> (body, is event)
        self.sent_at: dict[int, float] = {}
        self.acked: list[tuple[str, int]] = []
        self._dev_seq = dict.fromkeys(devices, 0)
        self._rec_dev: dict[int, tuple[str, int]] = {}
        self.offline = threading.Event()
        self._lock = threading.Lock()
        self.c = client(f"chaos-gw-{gw_id}", login, clean_session=False)
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_ack
        self.c.reconnect_delay_set(1, 2)
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, c: mqtt.Client, *_a: Any) -> None:
        c.subscribe(ack_topic(self.id), qos=1)

    def _on_ack(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            seqs = decode_ack(bytes(msg.payload))
        except ValueError:
            return
        with self._lock:
            for s in seqs:
                if self.pending.pop(s, None) is not None:
                    self.sent_at.pop(s, None)
                    self._rec_dev.pop(s, None)

    def _add(self, body: str, event: bool) -> int:
        with self._lock:
            self.seq += 1
            self.pending[self.seq] = (body, event)
            return self.seq

    def reading(self, dev: str) -> None:
        with self._lock:
            self._dev_seq[dev] += 1
            n = self._dev_seq[dev]
        t = now_ms()
        seq = self._add(
            record_body(
                device_id=dev, kind="t", ts=t, rx=t, gateway_timed=False, payload={"m": {"seq": n}}
            ),
            False,
        )
        with self._lock:
            self.acked.append((dev, n))
            if seq in self.pending:
                self._rec_dev[seq] = (dev, n)

    def unacknowledged(self) -> set[tuple[str, int]]:
        """The (device, seq) readings the backend has not acknowledged yet."""
        with self._lock:
            return set(self._rec_dev.values())

    def event(self, dev: str, etype: str, ts: int, data: dict[str, Any] | None = None) -> bool:
        body = record_body(
            device_id=dev,
            kind="e",
            ts=ts,
            rx=ts,
            gateway_timed=False,
            payload={"e": etype, "x": data or {}},
        )
        self._add(body, True)
        self.pump(events_only=True)
        return True

    def backlog(self) -> int:
        with self._lock:
            return len(self.pending)

    def pump(self, resend_after: float = 5.0, *, events_only: bool = False) -> None:
        """Send what is due: events first on their own topic, then telemetry batches."""
        if self.offline.is_set() or not self.c.is_connected():
            return
        now = time.monotonic()
        with self._lock:
            due = [
                (s, b, e)
                for s, (b, e) in sorted(self.pending.items())
                if now - self.sent_at.get(s, -1e9) >= resend_after and (e or not events_only)
            ]
            for s, _b, _e in due:
                self.sent_at[s] = now
        for event in (True, False):
            rows = [(s, self.boot, b) for s, b, e in due if e == event]
            for i in range(0, len(rows), self.batch):
                self.c.publish(
                    up_topic(self.id, events=event),
                    encode_batch(self.id, rows[i : i + self.batch]),
                    qos=1,
                )

    def raw(self, payload: bytes) -> None:
        self.c.publish(up_topic(self.id), payload, qos=1)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Departments:
    """One persistent-session subscription per (audience, scope), recording each message with
    the time it arrived; and a viewer of every alert (``VIEWER``, for the clock jump's check:
    no alert of any kind raised or cleared because of it)."""

    VIEWER = ("*", "*")

    def __init__(
        self,
        port: int,
        audiences: set[tuple[str, str]],
        logins: dict[tuple[str, str], Login],
    ) -> None:
        self.got: list[Received] = []
        self.seen: list[Received] = []  # the viewer's
        self._lock = threading.Lock()
        self.clients: list[mqtt.Client] = []
        self.ready = threading.Semaphore(0)
        viewer = [self.VIEWER] if self.VIEWER in logins else []  # (when given a login)
        for aud in [*sorted(audiences), *viewer]:
            name = "viewer" if aud == self.VIEWER else f"{aud[0]}-{aud[1]}"
            c = client(f"chaos-dept-{name}", logins[aud], clean_session=False, userdata=aud)
            c.on_connect = self._on_connect
            c.on_message = self._on_message
            c.reconnect_delay_set(1, 2)
            c.connect_async("127.0.0.1", port)
            c.loop_start()
            self.clients.append(c)

    def _on_connect(self, c: mqtt.Client, aud: tuple[str, str], *_a: Any) -> None:
        topic = "anju/alerts/#" if aud == self.VIEWER else f"anju/alerts/{aud[0]}/{aud[1]}/#"
        c.subscribe(topic, qos=1)
        self.ready.release()

    def _on_message(self, _c: mqtt.Client, aud: tuple[str, str], msg: mqtt.MQTTMessage) -> None:
        t = now_ms()
        try:
            p = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(p, dict):
            with self._lock:
                (self.seen if aud == self.VIEWER else self.got).append(Received(aud, p, t))

    def wait_ready(self, timeout: float) -> None:
        for _ in self.clients:
            self.ready.acquire(timeout=timeout)

    def close(self) -> None:
        for c in self.clients:
            c.loop_stop()
            c.disconnect()


def audiences_of(dev: DeviceInfo) -> frozenset[tuple[str, str]]:
    """Who receives a fire panel's fire.alarm (ALERTS.md: fire, property, community)."""
    return frozenset(
        {("fire", dev.district), ("property", dev.property_org), ("community", dev.community_id)}
    )


# Poison (tests/test_poison*.py): NUL, a lone surrogate, deep nesting, huge integers.
POISON_DEVICE: tuple[bytes, ...] = (
    b'{"ts": 1, "metrics": {"floor": "a\\u0000b"}}',
    b'{"metrics": {"door": "\\ud800"}}',
    b'{"metrics": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
    b'{"ts": ' + b"9" * 5000 + b', "metrics": {"floor": 1}}',
    b"\xff\xfe not utf-8",
)


def poison_gateway(gw_id: str) -> tuple[bytes, ...]:
    return (
        b'{"v":1,"gw":"' + gw_id.encode() + b'","recs":[{"seq":1,"d":"x\\u0000"}]}',
        b'{"v":1,"gw":"' + gw_id.encode() + b'","recs":[{"seq":"\\udc00"}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"v":1,"gw":"'
        + gw_id.encode()
        + b'","recs":[{"seq":'
        + b"1" * 10_000
        + b',"b":"x","d":"y","k":"t","ts":1,"rx":1,"m":{}}]}',
    )


@dataclass
class Plan:
    communities: int
    real_gateways: int
    workers: int
    seed: int
    data: Path
    reading_interval_s: float = 0.25
    secure: bool = True  # provisioned as ``anju demo`` (False: ``--insecure``)
    breaks: tuple[str, ...] = ()  # ANJU_BREAK of every backend worker (a guarantee broken)
    exit_after_commit: bool = False  # the backend's test-only exit hook (backend_kill_after_commit)


@dataclass
class City:
    plan: Plan
    city: CityIndex
    registry: Path
    children: _Children
    pg: PrivatePostgres
    uplink: PrivateMosquitto
    lans: dict[str, PrivateMosquitto]
    proxies: dict[str, Proxy]
    db_url: str
    api_ports: dict[str, int]  # by backend worker
    outboxes: dict[str, Path]
    skew_files: dict[str, Path]  # ANJU_GATEWAY_CLOCK_SKEW_FILE of each real gateway
    prov: ProvisionResult | None
    backend_env: dict[str, str]
    probes: dict[str, Probe] = field(default_factory=dict)
    sims: dict[str, SimGateway] = field(default_factory=dict)
    panels: dict[str, str] = field(default_factory=dict)  # panel device -> its gateway
    readers: dict[str, str] = field(default_factory=dict)  # probe reading device -> gateway
    faults: list[Fault] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    depth_log: list[tuple[int, str, int]] = field(default_factory=list)
    started: list[int] = field(default_factory=list)  # every pid this harness started
    # EXIT_AFTER_COMMIT_ENV of every backend worker (``plan.exit_after_commit``): while this
    # file exists, the worker that commits next exits before acknowledging (and removes it).
    exit_file: Path | None = None

    # --- processes -----------------------------------------------------------------------
    def backend_names(self) -> list[str]:
        return [f"backend-{i}" for i in range(self.plan.workers)]

    def start_backend(self, name: str) -> None:
        """One worker; several form one group (docs/scaling.md): the holder of the group's
        lock leads and serves the API, the others stand by."""
        argv = _anju(
            "backend", "run", "--db", self.db_url, "--registry", str(self.registry),
            "--api-port", str(self.api_ports[name]),
        )  # fmt: skip
        if self.plan.workers > 1:
            argv += ["--group", "anju-chaos"]
        p = self.children.start(name, argv, env=self.backend_env)
        self.started.append(p.pid)

    def leader(self) -> str | None:
        """The worker whose API answers (only the leader serves it)."""
        for name, port in self.api_ports.items():
            url = f"http://127.0.0.1:{port}/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return name
        return None

    def login(self, broker: str, user: str) -> Login:
        """``user`` on ``broker`` (``backend`` or ``lan/<gateway>``); anonymous if insecure."""
        if self.prov is None:
            return Login()
        ident = self.prov.identity(broker, user)
        ca = self.prov.ca_file if broker == "backend" else None
        return Login(ident.username, ident.password, ca)

    def lan_url(self, gw: str, user: str) -> str:
        if self.prov is None:
            return self.lans[gw].url
        return self.prov.identity(f"lan/{gw}", user).url("127.0.0.1", self.lans[gw].port, tls=False)

    def jump_clock(self, gw: str, offset_ms: int) -> None:
        """A real gateway's wall clock ``offset_ms`` off (gateway/clock.py's skew file)."""
        path = self.skew_files[gw]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(str(offset_ms), encoding="ascii")
        tmp.replace(path)

    def start_gateway(self, gw_id: str) -> None:
        cfg = self.plan.data / "gateways" / f"{gw_id}.yaml"
        argv = _anju("gateway", "run", "--config", str(cfg))
        env = {SKEW_FILE_ENV: str(self.skew_files[gw_id])}
        p = self.children.start(f"gateway-{gw_id}", argv, env=env)
        self.started.append(p.pid)

    def arm_exit_after_commit(self, armed: bool = True) -> None:
        """The leading worker exits after its next commit of new telemetry, before its
        acknowledgement (``armed``; False: the file removed, nothing happens)."""
        if self.exit_file is None:
            raise AnjuError("this city's backend has no exit-after-commit hook")
        if armed:
            self.exit_file.touch()
        else:
            self.exit_file.unlink(missing_ok=True)

    def kill(self, name: str) -> None:
        p = self.children.procs[name]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    # --- readings and depths -------------------------------------------------------------
    def acked(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for p in self.probes.values():
            out += p.acked
        for s in self.sims.values():
            out += s.acked
        return out

    def stored(self) -> list[tuple[str, int]]:
        devs = list(self.readers)
        with psycopg.connect(self.db_url, connect_timeout=10) as conn:
            rows = conn.execute(
                "SELECT device_id, num FROM readings WHERE metric = 'seq' AND device_id = ANY(%s)",
                (devs,),
            ).fetchall()
        return [(str(d), int(n)) for d, n in rows]

    def outbox_depths(self) -> dict[str, int]:
        out = {}
        for gw, path in self.outboxes.items():
            try:
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                    out[gw] = int(db.execute("SELECT count(*) FROM records").fetchone()[0])
            except sqlite3.Error:
                out[gw] = -1
        for gw, s in self.sims.items():
            out[gw] = s.backlog()
        return out


def build(plan: Plan) -> City:
    """Start the servers, the backend worker(s) and the real gateways; the probes and
    simulated gateways are attached by ``attach``."""
    from device_simulators.registrygen import CityPlan, write_registry

    data = plan.data
    (data / "logs").mkdir(parents=True, exist_ok=True)
    (data / "gateways").mkdir(parents=True, exist_ok=True)
    registry = data / "registry.yaml"
    write_registry(
        CityPlan(
            communities=plan.communities,
            seed=plan.seed,
            buildings_min=2,
            buildings_max=3,
            smoke_per_building=2,
        ),
        registry,
    )
    from anju.registry import load_registry

    city = CityIndex(load_registry(registry))
    # The city's CA, identities and ACLs, as ``anju demo`` provisions them (DATA/city).
    prov = _provision(registry, data) if plan.secure else None
    children = _Children(data / "logs")
    pg = PrivatePostgres(data / "postgres").start()
    uplink = PrivateMosquitto(
        data / "mqtt-uplink",
        name="uplink broker",
        provisioned=prov.backend if prov else None,
        tls=True,
    ).start()
    gws = [gw for gw, _c in city.gateways()]
    real = gws[: plan.real_gateways]
    lans: dict[str, PrivateMosquitto] = {}
    proxies: dict[str, Proxy] = {}
    outboxes: dict[str, Path] = {}
    skews: dict[str, Path] = {}
    for gw in real:
        lans[gw] = PrivateMosquitto(
            data / "mqtt-lan" / gw,
            name=f"LAN broker of {gw}",
            provisioned=prov.lan[gw] if prov else None,
        ).start()
        proxies[gw] = Proxy(uplink.port)  # TLS passes through it untouched
        outboxes[gw] = data / "gateways" / gw / "outbox.sqlite3"
        skews[gw] = data / "gateways" / gw / "clock-skew-ms"
        skews[gw].parent.mkdir(parents=True, exist_ok=True)
        skews[gw].write_text("0", encoding="ascii")
        lan_link: dict[str, Any] = {"url": lans[gw].url}
        up_link: dict[str, Any] = {
            "url": f"{'mqtts' if uplink.tls else 'mqtt'}://127.0.0.1:{proxies[gw].port}"
        }
        if prov is not None:
            lan_link |= {"username": gw, "password": prov.identity(f"lan/{gw}", gw).password}
            up_link |= {
                "username": gw,
                "password": prov.identity("backend", gw).password,
                "ca_file": str(prov.ca_file),
            }
        cfg = {
            "gateway_id": gw,
            "lan": lan_link,
            "uplink": up_link,
            "outbox": {"path": str(outboxes[gw])},
            "devices": [d.id for d in city.gateway_devices(gw)],
        }
        _private_file(data / "gateways" / f"{gw}.yaml", yaml.safe_dump(cfg))
    backend_env = {"ANJU_MQTT_URL": uplink.url}
    if prov is not None:
        backend_env["ANJU_MQTT_URL"] = prov.identity("backend", acl.BACKEND_USER).url(
            "127.0.0.1", uplink.port, tls=True
        )
        tokens = yaml.safe_load(prov.tokens_file.read_text(encoding="utf-8"))["tokens"]
        _private_file(data / "alerting.yaml", yaml.safe_dump({"tokens": tokens}))
        backend_env |= {
            "ANJU_MQTT_CA_FILE": str(prov.ca_file),
            "ANJU_ALERTING": str(data / "alerting.yaml"),
        }
    if plan.breaks:
        backend_env["ANJU_BREAK"] = ",".join(plan.breaks)
    exit_file = data / "backend-exit-after-commit" if plan.exit_after_commit else None
    if exit_file is not None:
        backend_env[EXIT_AFTER_COMMIT_ENV] = str(exit_file)
    api_ports = {f"backend-{i}": free_port() for i in range(plan.workers)}
    c = City(
        plan, city, registry, children, pg, uplink, lans, proxies, pg.url(), api_ports,
        outboxes, skews, prov, backend_env, exit_file=exit_file,
    )  # fmt: skip
    for name in c.backend_names():
        c.start_backend(name)
    for gw in real:
        c.start_gateway(gw)
    if plan.workers == 1:
        _wait_http(
            f"http://127.0.0.1:{api_ports['backend-0']}/healthz",
            children.procs["backend-0"],
            90,
            data / "logs" / "backend-0.log",
        )
    else:
        deadline = time.monotonic() + 90
        while c.leader() is None:
            if time.monotonic() > deadline:
                raise AnjuError(f"no backend worker leads within 90 s; see {data / 'logs'}")
            time.sleep(0.3)
    return c


def attach(c: City) -> None:
    """Probe devices on every gateway: one reading device and (where there is one) its fire
    panel."""
    for gw, _com in c.city.gateways():
        devs = c.city.gateway_devices(gw)
        reader = next((d for d in devs if d.kind not in ("fire_panel",)), None)
        panel = next((d for d in devs if d.kind == "fire_panel"), None)
        ids = [d.id for d in (reader, panel) if d is not None]
        if gw in c.lans:
            logins = {d: c.login(f"lan/{gw}", d) for d in ids}
            c.probes[gw] = Probe(c.lans[gw].port, ids, logins)
        else:
            c.sims[gw] = SimGateway(gw, c.uplink.port, ids, c.login("backend", gw))
        if reader is not None:
            c.readers[reader.id] = gw
        if panel is not None:
            c.panels[panel.id] = gw


def leftovers(c: City) -> list[str]:
    """Processes this harness started that are still alive."""
    out = []
    for pid in c.started:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.split(")")[-1].split()[0] != "Z":
            out.append(str(pid))
    return out


def rng_for(seed: int, what: str) -> random.Random:
    return random.Random(f"anju-chaos:{seed}:{what}")
