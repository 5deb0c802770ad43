"""``anju demo``: the whole chain on one machine, with nothing to configure.

Private PostgreSQL and Mosquitto servers (one uplink broker, one LAN broker per gateway) in a
data folder, the backend, one gateway per community and the device simulators, each its own
process; alerts shown live in the terminal. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from anju.errors import AnjuError
from anju.registry import CityIndex, load_registry, sample_registry_path
from anju.servers import PrivateMosquitto, PrivatePostgres, _die_with_parent, free_port
from gateway.adapters.demo import DemoAdapters

SAMPLE_SCENARIO = Path(__file__).parent / "data" / "scenarios" / "demo.yaml"
_SEV_COLOUR = {"critical": "\033[1;31m", "major": "\033[33m", "minor": "\033[36m", "info": ""}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    data_dir: Path
    registry: Path | None = None
    scenario: Path | None = None
    simulators: bool = True
    duration_s: float | None = None
    db_url: str | None = None
    time_scale: float = 1.0
    history_days: int = 0  # a generated past for the supervision pages (issue 15)


class _Children:
    """Processes we started, stopped together with a shared deadline."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed in close())
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self.procs[name] = proc
        return proc

    def stop(self, names: list[str], timeout: float) -> None:
        live = [self.procs[n] for n in names if n in self.procs and self.procs[n].poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in live:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(2)

    def close(self) -> None:
        for f in self._logs:
            f.close()


def _anju(*args: str) -> list[str]:
    return [sys.executable, "-m", "anju", *args]


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise AnjuError(f"the backend exited with code {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AnjuError(f"the backend did not answer on {url} within {timeout:.0f} s; see {log}")


def format_alert(p: dict[str, Any], colour: bool) -> str:
    sev = str(p.get("severity", ""))
    c, reset = (_SEV_COLOUR.get(sev, ""), "\033[0m") if colour else ("", "")
    auds = " ".join(f"{a['audience']}/{a['scope']}" for a in p.get("audiences", []))
    where = (
        f"{p.get('community_name', '')} {p.get('location') or ('bldg ' + str(p.get('building')))}"
    )
    ev = p.get("evidence", {})
    extra = " (confirmed)" if ev.get("confirmed") else ""
    state = str(p.get("state", ""))
    if state == "raised" and p.get("updated_at") != p.get("raised_at"):
        state = "updated"
    return (
        f"{time.strftime('%H:%M:%S')}  {c}{sev.upper():8}{reset} {state:12} "
        f"{p.get('type', ''):22} {p.get('title', '')}{extra}\n"
        f"          {p.get('device_id', '')} · {where} · occurred {p.get('occurred_at', '')}\n"
        f"          → {auds}"
    )


class _AlertView:
    """Shows every alert change once (it arrives once per audience topic)."""

    def __init__(self, url_port: int) -> None:
        self.seen: set[tuple[str, str, str]] = set()
        self.count = 0
        self.colour = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"anju-demo-{os.getpid()}")
        self.client.on_connect = lambda c, *_: c.subscribe("anju/alerts/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", url_port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            p = json.loads(msg.payload)
            key = (p["id"], p["state"], p["updated_at"])
        except (ValueError, KeyError, TypeError):
            return
        self.show(p, key)

    def show(self, p: dict[str, Any], key: tuple[str, str, str] | None = None) -> None:
        key = key or (p["id"], p["state"], p["updated_at"])
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
            self.count += 1
            print(format_alert(p, self.colour), flush=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _show_open_alerts(url: str, view: _AlertView) -> None:
    """Alerts still open from an earlier run of the same data folder are shown first."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            alerts = json.loads(r.read())
    except (OSError, ValueError):
        return
    if alerts:
        print(f"-- {len(alerts)} alerts still open from an earlier run --", flush=True)
        for p in reversed(alerts):
            view.show(p)
        print("-- live --", flush=True)


def run_demo(opts: DemoOptions) -> int:
    data = opts.data_dir.resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    registry_path = (opts.registry or sample_registry_path()).resolve()
    city = CityIndex(load_registry(registry_path))
    stop = threading.Event()

    def on_signal(_s: int, _f: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    children = _Children(logs)
    servers: list[PrivateMosquitto | PrivatePostgres] = []
    view: _AlertView | None = None
    status = 0
    try:
        if opts.db_url:
            db_url = opts.db_url
        else:
            pg = PrivatePostgres(data / "postgres")
            servers.append(pg)
            db_url = pg.start().url()
        if opts.history_days > 0:
            from backend.supervision.history import fill_for_demo

            print(f"anju demo: {fill_for_demo(db_url, city, opts.history_days)}", file=sys.stderr)
        uplink = PrivateMosquitto(data / "mqtt-uplink", name="uplink broker")
        servers.append(uplink)
        uplink.start()
        lan: dict[str, str] = {}
        for gw_id, _com in city.gateways():
            b = PrivateMosquitto(data / "mqtt-lan" / gw_id, name=f"LAN broker of {gw_id}")
            servers.append(b)
            lan[gw_id] = b.start().url
        # Devices reached through the gateways' adapters (GB/T 26875.3, Modbus; docs/adapters.md)
        adapters = DemoAdapters.plan(city, free_port)

        api_port = free_port()
        backend = children.start(
            "backend",
            _anju(
                "backend",
                "run",
                "--db",
                db_url,
                "--mqtt",
                uplink.url,
                "--registry",
                str(registry_path),
                "--api-port",
                str(api_port),
                # The audit chain's head, appended every 10 s (docs/alerts.md, The audit chain)
                "--audit-anchor-file",
                str(data / "audit-anchors.jsonl"),
            ),
        )
        view = _AlertView(uplink.port)
        for gw_id, url in lan.items():
            cfg_path = data / "gateways" / f"{gw_id}.yaml"
            cfg_path.parent.mkdir(parents=True, exist_ok=True)
            cfg = {
                "gateway_id": gw_id,
                "lan": {"url": url},
                "uplink": {"url": uplink.url},
                "outbox": {"path": str(data / "gateways" / gw_id / "outbox.sqlite3")},
                "devices": [d.id for d in city.gateway_devices(gw_id)],
                **adapters.sections(gw_id),
            }
            cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
            children.start(f"gateway-{gw_id}", _anju("gateway", "run", "--config", str(cfg_path)))
        _wait_http(f"http://127.0.0.1:{api_port}/healthz", backend, 60, logs / "backend.log")

        endpoints = {
            "api": f"http://127.0.0.1:{api_port}",
            "alerts_mqtt": uplink.url,
            "uplink_mqtt": uplink.url,
            "lan_mqtt": lan,
            "database": db_url,
            "data_dir": str(data),
            "gbt26875": adapters.endpoints(),
        }
        print(json.dumps(endpoints, ensure_ascii=False), flush=True)
        print(
            f"anju demo: {len(city.communities)} communities, {len(lan)} gateways, "
            f"{len(city.devices)} devices. Alerts appear below; logs in {logs}.\n"
            f"  watch a department: mosquitto_sub -p {uplink.port} -v -q 1 "
            f"-t 'anju/alerts/fire/#' -t 'anju/alerts/market_supervision/#'\n"
            f"  API: http://127.0.0.1:{api_port}/docs   Ctrl-C stops everything.\n"
            f"  supervision: http://127.0.0.1:{api_port}/screen/supervision/",
            file=sys.stderr,
            flush=True,
        )
        _show_open_alerts(f"http://127.0.0.1:{api_port}/api/alerts?open_only=true", view)
        if opts.simulators:
            fleet = adapters.fleet_registry(registry_path, data / "registry-mqtt-devices.yaml")
            sim = ["simulate", "--registry", str(fleet)]
            for gw_id, url in lan.items():
                sim += ["--lan", f"{gw_id}={url}"]
            scenario = opts.scenario or SAMPLE_SCENARIO
            sim += ["--scenario", str(scenario.resolve()), "--time-scale", str(opts.time_scale)]
            children.start("simulators", _anju(*sim))
            for name, argv in adapters.simulators():
                children.start(name, argv)

        deadline = None if opts.duration_s is None else time.monotonic() + opts.duration_s
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if backend.poll() is not None:
                print(
                    f"anju demo: the backend exited ({backend.returncode}); see "
                    f"{logs / 'backend.log'}",
                    file=sys.stderr,
                )
                status = 1
                break
            for name, proc in list(children.procs.items()):  # as systemd's Restart=always
                if name.startswith("gateway-") and proc.poll() is not None:
                    print(
                        f"anju demo: {name} exited ({proc.returncode}); starting it again",
                        file=sys.stderr,
                    )
                    children.start(name, list(proc.args))  # type: ignore[arg-type]
            stop.wait(0.5)
    finally:
        print("anju demo: stopping…", file=sys.stderr, flush=True)
        # Devices first, then the backend, then the gateways: a demo that ends is not an
        # outage, so the backend is not there to raise gateway.offline for it. (Whatever the
        # gateways still hold stays in their outboxes for the next run.)
        children.stop([n for n in children.procs if n.startswith("simulators")], timeout=3)
        children.stop(["backend"], timeout=3)
        children.stop([n for n in children.procs if n.startswith("gateway-")], timeout=3)
        if view is not None:
            view.close()
        for s in reversed(servers):
            s.stop()
        children.close()
    if view is not None:
        print(
            f"anju demo: stopped; {view.count} alert changes shown; data kept in {data}",
            file=sys.stderr,
        )
    return status
