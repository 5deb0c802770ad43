"""``anju demo``: the whole chain on one machine, with nothing to configure.

Private PostgreSQL and Mosquitto servers (one uplink broker, one LAN broker per gateway) in a
data folder, the backend, one gateway per community and the device simulators, each its own
process; alerts shown live in the terminal. Ctrl-C or SIGTERM stops everything it started.

Secure by default (issue 13): the city is provisioned into ``DATA/city`` (``anju provision``;
kept and re-used by a rerun), every broker requires a password and enforces the generated ACLs
(client id = user name), the uplink broker speaks TLS with the demo's CA, and the API requires
a token. The first stdout line is always the endpoints JSON, credentials in the URLs;
``--insecure`` is the old anonymous, clear-text demo.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from anju import acl
from anju.errors import AnjuError, ServerError
from anju.localtime import clock
from anju.registry import CityIndex, load_registry, sample_registry_path
from anju.servers import (
    PrivateMosquitto,
    PrivatePostgres,
    _die_with_parent,
    free_port,
    wait_port,
)
from gateway.adapters.demo import DemoAdapters

if TYPE_CHECKING:
    from anju.provision.model import ProvisionResult

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
    insecure: bool = False  # anonymous brokers in clear text, an API without tokens
    fresh: bool = False  # start from an empty data folder
    workers: int = 1  # backend workers (docs/scaling.md): one leads, the others stand by


class _Children:
    """Processes we started, stopped together with a shared deadline."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed in close())
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env} if env else None,
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


def _wait_leader(apis: dict[str, str], children: _Children, timeout: float, logs: Path) -> str:
    """The API of the worker that answers (with one worker: that worker's, as before)."""
    if len(apis) == 1:
        [(name, api)] = apis.items()
        _wait_http(f"{api}/healthz", children.procs[name], timeout, logs / f"{name}.log")
        return api
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for api in apis.values():
            with (
                contextlib.suppress(OSError, http.client.HTTPException),
                urllib.request.urlopen(f"{api}/healthz", timeout=1) as r,
            ):
                if r.status == 200:
                    return api
        time.sleep(0.2)
    raise AnjuError(f"no backend worker answered within {timeout:.0f} s; see {logs}")


def _restart(children: _Children, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A backend worker that died, started again (as systemd's Restart=always)."""
    old = children.procs[name]
    print(f"anju demo: {name} exited ({old.returncode}); starting it again", file=sys.stderr)
    argv: list[str] = list(old.args)  # type: ignore[arg-type]
    return children.start(name, argv, env=env)


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


def format_alert(p: dict[str, Any], colour: bool, at: str | None = None) -> str:
    """An alert change in three lines, times in the deployment's zone: now, or ``at`` (the
    change's own time, for alerts listed from an earlier run)."""
    sev = str(p.get("severity", ""))
    c, reset = (_SEV_COLOUR.get(sev, ""), "\033[0m") if colour else ("", "")
    auds = " ".join(f"{a['audience']}/{a['scope']}" for a in p.get("audiences", []))
    place = p.get("location") or (f"bldg {p['building']}" if p.get("building") else "")
    where = " ".join(x for x in (str(p.get("community_name") or ""), str(place)) if x)
    ev = p.get("evidence", {})
    extra = " (confirmed)" if ev.get("confirmed") else ""
    state = str(p.get("state", ""))
    if state == "raised" and p.get("updated_at") != p.get("raised_at"):
        state = "updated"
    return (
        f"{clock(at) if at else clock()}  {c}{sev.upper():8}{reset} {state:12} "
        f"{p.get('type', ''):22} {p.get('title', '')}{extra}\n"
        f"          {p.get('device_id', '')} · {where} · occurred {clock(p.get('occurred_at'))}\n"
        f"          → {auds}"
    )


class _AlertView:
    """Shows every alert change once, from the API's live stream (``/api/alerts/stream``, the
    admin token): the MQTT identities printed on the endpoints line stay the user's own (a
    second login with one user name would take over its session)."""

    def __init__(self, api: str, token: str | None, others: tuple[str, ...] = ()) -> None:
        # With several workers the stream follows the leader: the next API after each loss.
        self.apis = [urlsplit(a) for a in (api, *others)]
        self.api = self.apis[0]
        self.headers = {"Accept": "text/event-stream"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.seen: set[tuple[str, str, str]] = set()
        self.count = 0
        self.colour = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.ready = threading.Event()  # the stream is open: changes from now on are shown
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="alert-view", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            conn = http.client.HTTPConnection(self.api.hostname or "", self.api.port, timeout=40)
            self._conn = conn
            try:
                conn.request("GET", "/api/alerts/stream", headers=self.headers)
                r = conn.getresponse()
                if r.status != 200:
                    raise OSError(f"HTTP {r.status}")
                data: list[str] = []
                while not self._stop.is_set():
                    raw = r.readline()
                    if not raw:
                        break
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith(":"):
                        self.ready.set()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    elif not line and data:
                        self._on_data("\n".join(data))
                        data = []
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self.api = self.apis[(self.apis.index(self.api) + 1) % len(self.apis)]
            self._stop.wait(1.0)

    def _on_data(self, text: str) -> None:
        try:
            p = json.loads(text)
            key = (p["id"], p["state"], p["updated_at"])
        except (ValueError, KeyError, TypeError):
            return
        self.show(p, key)

    def show(
        self, p: dict[str, Any], key: tuple[str, str, str] | None = None, at: str | None = None
    ) -> None:
        key = key or (p["id"], p["state"], p["updated_at"])
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
            self.count += 1
            print(format_alert(p, self.colour, at), flush=True)

    def close(self) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(3)


def _open_alerts(url: str, token: str | None) -> list[dict[str, Any]]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            alerts = json.loads(r.read())
    except (OSError, ValueError):
        return []
    return alerts if isinstance(alerts, list) else []


def _show_open_alerts(alerts: list[dict[str, Any]], view: _AlertView) -> None:
    """Alerts still open from an earlier run of the same data folder are shown first."""
    if alerts:
        print(f"-- {len(alerts)} alerts still open from an earlier run --", flush=True)
        for p in reversed(alerts):
            view.show(p, at=str(p.get("updated_at") or ""))
        print("-- live --", flush=True)


# What a demo makes in its data folder: --fresh deletes a folder holding only these.
_DEMO_FILES = frozenset(
    {
        "logs",
        "postgres",
        "mqtt-uplink",
        "mqtt-lan",
        "gateways",
        "city",
        "alerting.yaml",
        "audit-anchors.jsonl",
        "registry-mqtt-devices.yaml",
    }
)


def _wipe(data: Path) -> None:
    """``--fresh``: delete the data folder (and a database cluster kept elsewhere), refusing a
    folder that holds anything a demo did not make."""
    if not data.exists():
        return
    strange = sorted(set(os.listdir(data)) - _DEMO_FILES)
    if strange:
        raise AnjuError(
            f"--fresh: {data} holds {', '.join(strange[:5])}, which the demo did not make; "
            "not deleting it (choose another --data-dir)"
        )
    marker = data / "postgres" / "PGDATA-IS-ELSEWHERE"
    if marker.exists():
        shutil.rmtree(Path(marker.read_text().strip()).parent, ignore_errors=True)
    shutil.rmtree(data)


def _carried_over(data: Path, open_alerts: int, own_db: bool) -> str | None:
    """What a rerun takes from the last run in the same data folder, in plain words."""
    kept = []
    if own_db and (data / "postgres").exists():
        kept.append(f"the database ({open_alerts} alerts still open, shown below)")
    if (data / "city" / "secrets.json").exists():
        kept.append(f"the credentials and CA in {data / 'city'} (unchanged)")
    outboxes = list((data / "gateways").glob("*/outbox.sqlite3"))
    if outboxes:
        kept.append(f"{len(outboxes)} gateway outboxes (what they had not delivered is sent now)")
    if not kept:
        return None
    return (
        "anju demo: carried over from the last run: " + "; ".join(kept) + ". "
        "`anju demo --fresh` starts from an empty data folder."
    )


def _private_file(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _provision(registry: Path, data: Path) -> ProvisionResult:
    from anju.provision import provision

    return provision(registry, data / "city")


def run_demo(opts: DemoOptions) -> int:
    if not opts.time_scale > 0:  # every simulator's schedule is divided by it
        raise AnjuError(f"--time-scale must be positive, not {opts.time_scale:g}")
    data = opts.data_dir.resolve()
    if opts.fresh:
        _wipe(data)
    rerun = (data / "logs").exists()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    registry_path = (opts.registry or sample_registry_path()).resolve()
    city = CityIndex(load_registry(registry_path))
    stop = threading.Event()

    def on_signal(_s: int, _f: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # The city's CA, identities, ACLs and API tokens (kept in DATA/city, re-used by a rerun).
    prov = None if opts.insecure else _provision(registry_path, data)
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
        uplink = PrivateMosquitto(
            data / "mqtt-uplink",
            name="uplink broker",
            provisioned=prov.backend if prov else None,
            tls=True,
        )
        servers.append(uplink)
        uplink.start()
        lan: dict[str, PrivateMosquitto] = {}
        for gw_id, _com in city.gateways():
            # The LAN broker stays plain MQTT on loopback, with passwords and the ACL.
            b = PrivateMosquitto(
                data / "mqtt-lan" / gw_id,
                name=f"LAN broker of {gw_id}",
                provisioned=prov.lan[gw_id] if prov else None,
            )
            servers.append(b)
            lan[gw_id] = b.start()

        def user_url(broker: str, user: str, port: int, *, tls: bool) -> str:
            if prov is None:
                return f"mqtt://127.0.0.1:{port}"
            return prov.identity(broker, user).url("127.0.0.1", port, tls=tls)

        # Devices reached through the gateways' adapters (GB/T 26875.3, Modbus; docs/adapters.md)
        adapters = DemoAdapters.plan(city, free_port)

        backend_env = {
            "ANJU_MQTT_URL": user_url("backend", acl.BACKEND_USER, uplink.port, tls=True)
        }
        api_token: str | None = None
        if prov is not None:
            api_token = prov.tokens["admin"].token
            tokens = yaml.safe_load(prov.tokens_file.read_text(encoding="utf-8"))["tokens"]
            _private_file(data / "alerting.yaml", yaml.safe_dump({"tokens": tokens}))
            backend_env |= {
                "ANJU_MQTT_CA_FILE": str(prov.ca_file),
                "ANJU_ALERTING": str(data / "alerting.yaml"),
            }
        # ---- backend workers (issue 11, docs/scaling.md) ------------------------------------
        # One worker: as before. Several: one group; the worker holding its lock leads (and
        # serves the API), the others stand by; a worker that dies is started again.
        worker_names = ["backend"] + [f"backend-{i}" for i in range(2, opts.workers + 1)]
        worker_apis: dict[str, str] = {}
        for name in worker_names:
            port = free_port()
            worker_apis[name] = f"http://127.0.0.1:{port}"
            argv = _anju(
                "backend",
                "run",
                "--db",
                db_url,
                "--registry",
                str(registry_path),
                "--api-port",
                str(port),
                # The audit chain's head, appended every 10 s (docs/alerts.md, The audit chain)
                "--audit-anchor-file",
                str(data / "audit-anchors.jsonl"),
            )
            if opts.workers > 1:
                argv += ["--group", "anju-backend"]
            children.start(name, argv, env=backend_env)
        backend = children.procs["backend"]
        # ---- end of backend workers ------------------------------------------------------------
        # The Modbus controllers are servers the gateways poll: up before the gateways.
        device_sims = adapters.simulators(time_scale=opts.time_scale) if opts.simulators else []
        for name, argv in device_sims:
            if name.startswith("simulators-modbus"):
                children.start(name, argv)
        if device_sims:
            for port in adapters.modbus_ports.values():
                with contextlib.suppress(ServerError):  # a late one is polled again later
                    wait_port(port, 10)
        for gw_id, broker in lan.items():
            cfg_path = data / "gateways" / f"{gw_id}.yaml"
            lan_link: dict[str, Any] = {"url": broker.url}
            up_link: dict[str, Any] = {"url": uplink.url}
            if prov is not None:
                lan_link |= {
                    "username": gw_id,
                    "password": prov.identity(f"lan/{gw_id}", gw_id).password,
                }
                up_link |= {
                    "username": gw_id,
                    "password": prov.identity("backend", gw_id).password,
                    "ca_file": str(prov.ca_file),
                }
            cfg = {
                "gateway_id": gw_id,
                "lan": lan_link,
                "uplink": up_link,
                "outbox": {"path": str(data / "gateways" / gw_id / "outbox.sqlite3")},
                "devices": [d.id for d in city.gateway_devices(gw_id)],
                **adapters.sections(gw_id),
            }
            _private_file(cfg_path, yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
            children.start(f"gateway-{gw_id}", _anju("gateway", "run", "--config", str(cfg_path)))
        api = _wait_leader(worker_apis, children, 60, logs)

        installers = {
            gw: user_url(f"lan/{gw}", acl.installer_user(gw), b.port, tls=False)
            for gw, b in lan.items()
        }
        first_gw = next(iter(lan), None)
        endpoints: dict[str, Any] = {
            "api": api,
            "api_token": api_token,
            "alerts_mqtt": user_url("backend", acl.ALERTS_VIEWER_USER, uplink.port, tls=True),
            "uplink_mqtt": (
                user_url("backend", first_gw, uplink.port, tls=True) if first_gw else uplink.url
            ),
            "lan_mqtt": installers,
            "subscribers": {
                f"{a}/{sc}": user_url("backend", acl.subscriber_user(a, sc), uplink.port, tls=True)
                for a, sc in acl.subscribers(city.registry)
            },
            "ca_file": str(prov.ca_file) if prov else None,
            "database": db_url,
            "data_dir": str(data),
            "gbt26875": adapters.endpoints(),
            "workers": [
                {"pid": children.procs[n].pid, "api": worker_apis[n]} for n in worker_names
            ],
        }
        # Always the first line on stdout: nothing is printed there before it.
        print(json.dumps(endpoints, ensure_ascii=False), flush=True)
        view = _AlertView(api, api_token, tuple(a for a in worker_apis.values() if a != api))
        view.ready.wait(10)
        open_alerts = _open_alerts(f"{api}/api/alerts?open_only=true&limit=1000", api_token)
        if rerun and (note := _carried_over(data, len(open_alerts), opts.db_url is None)):
            print(note, file=sys.stderr, flush=True)
        fire = next((k for k in endpoints["subscribers"] if k.startswith("fire/")), "fire/...")
        tls = f" --cafile {prov.ca_file}" if prov else ""
        print(
            f"anju demo: {len(city.communities)} communities, {len(lan)} gateways, "
            f"{len(city.devices)} devices. Alerts appear below; logs in {logs}.\n"
            f"  watch a department: mosquitto_sub -L '{endpoints['subscribers'].get(fire, '')}"
            f"/anju/alerts/{fire}/#'{tls} -v -q 1\n"
            f"  API: {api}/docs (token: the endpoints line's api_token)   "
            "Ctrl-C stops everything.\n"
            f"  supervision: {api}/screen/supervision/",
            file=sys.stderr,
            flush=True,
        )
        _show_open_alerts(open_alerts, view)
        if opts.simulators:
            fleet = adapters.fleet_registry(registry_path, data / "registry-mqtt-devices.yaml")
            sim = ["simulate", "--registry", str(fleet)]
            for gw_id, url in installers.items():
                sim += ["--lan", f"{gw_id}={url}"]
            scenario = opts.scenario or SAMPLE_SCENARIO
            sim += ["--scenario", str(scenario.resolve()), "--time-scale", str(opts.time_scale)]
            children.start("simulators", _anju(*sim))
            for name, argv in device_sims:
                if name not in children.procs:
                    children.start(name, argv)

        deadline = None if opts.duration_s is None else time.monotonic() + opts.duration_s
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            for name in worker_names[1:] if opts.workers > 1 else []:
                if children.procs[name].poll() is not None:
                    _restart(children, name, backend_env)
            if opts.workers > 1 and backend.poll() is not None:
                backend = _restart(children, "backend", backend_env)
            elif backend.poll() is not None:
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
        if view is not None:
            view.close()
        children.stop([n for n in children.procs if n.startswith("backend")], timeout=8)
        children.stop([n for n in children.procs if n.startswith("gateway-")], timeout=3)
        for s in reversed(servers):
            s.stop()
        children.close()
    if view is not None:
        print(
            f"anju demo: stopped; {view.count} alert changes shown; data kept in {data}",
            file=sys.stderr,
        )
    return status
