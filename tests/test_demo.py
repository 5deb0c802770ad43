"""`anju demo` as a user runs it: endpoints first (with credentials), alerts live, brokers and
API closed to anyone without them, everything stopped on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from anju.mqtturl import parse_mqtt_url
from tests.demo_support import paho_client

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


def _string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _refused(url: str, ca: str | None) -> bool:
    """True when the broker at ``url`` refuses an MQTT 3.1.1 CONNECT with the URL's
    credentials (a closed connection or a CONNACK with a non-zero return code); TLS with
    ``ca`` for mqtts://."""
    addr = parse_mqtt_url(url)
    flags, payload = 0x02, _string("")  # clean session, an empty client id
    if addr.username:
        flags |= 0x80
        payload += _string(addr.username)
    if addr.password:
        flags |= 0x40
        payload += _string(addr.password)
    body = _string("MQTT") + bytes([4, flags]) + (30).to_bytes(2, "big") + payload
    packet = bytes([0x10, len(body)]) + body
    with socket.create_connection((addr.host, addr.port), timeout=10) as raw:
        try:
            if addr.tls:
                ctx = ssl.create_default_context(cafile=ca)
                with ctx.wrap_socket(raw, server_hostname=addr.host) as tls:
                    tls.sendall(packet)
                    answer = tls.recv(4)
            else:
                raw.sendall(packet)
                answer = raw.recv(4)
        except (ssl.SSLError, ConnectionError):
            return True
    return len(answer) < 4 or answer[0] != 0x20 or answer[3] != 0


def test_demo_is_secure_and_a_department_sees_its_own_alerts_only(tmp_path: Path) -> None:
    """The README's command: the endpoints line first, with credentials; a department's URL and
    the CA (as mosquitto_sub -L URL --cafile CA) receive that department's alerts and nothing
    else; anonymous, plaintext and wrong-password connections are refused; the API wants its
    token; everything stops on SIGTERM."""
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
            "150",
            "--time-scale",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first.startswith("{"):
            proc.kill()
            pytest.fail(f"first line {first!r}; stderr: {proc.communicate(timeout=10)[1]}")
        endpoints = json.loads(first)
        assert set(endpoints) >= {
            "api", "alerts_mqtt", "uplink_mqtt", "lan_mqtt", "database", "subscribers",
            "api_token", "ca_file",
        }  # fmt: skip
        assert "gw-jx-nh-0001-a" in endpoints["lan_mqtt"]
        ca = endpoints["ca_file"]
        assert Path(ca).exists()
        alerts = parse_mqtt_url(endpoints["alerts_mqtt"])
        assert alerts.tls and alerts.username and alerts.password
        assert parse_mqtt_url(endpoints["uplink_mqtt"]).username == "gw-jx-nh-0001-a"
        lan = parse_mqtt_url(endpoints["lan_mqtt"]["gw-jx-nh-0001-a"])
        assert lan.username == "installer.gw-jx-nh-0001-a" and lan.password
        assert {"fire/330402", "fire/330411", "market_supervision/330402"} <= set(
            endpoints["subscribers"]
        )

        # Every alert, as an operator's screen: until the 330411 fire alarm has come.
        every: list[tuple[str, str]] = []
        seen_other = threading.Event()

        def on_every(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            p = json.loads(msg.payload)
            every.append((msg.topic, p["type"]))
            if msg.topic.startswith("anju/alerts/fire/330411/"):
                seen_other.set()

        # The fire brigade of 330402 subscribes to every alert topic: the ACL lets through
        # only its own.
        fire: list[tuple[str, str]] = []
        market: list[tuple[str, str]] = []
        done = threading.Event()

        def collect(into: list[tuple[str, str]]) -> Any:
            def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
                into.append((msg.topic, json.loads(msg.payload)["type"]))
                types = {t for _, t in fire} | {t for _, t in market}
                if {"elevator.trapped", "fire.alarm"} <= types:
                    done.set()

            return on_message

        clients = []
        for url, on_message in (
            (endpoints["alerts_mqtt"], on_every),
            (endpoints["subscribers"]["fire/330402"], collect(fire)),
            (endpoints["subscribers"]["market_supervision/330402"], collect(market)),
        ):
            c = paho_client(url, ca)
            c.on_connect = lambda c, *_: c.subscribe("anju/alerts/#", qos=1)
            c.on_message = on_message
            port = parse_mqtt_url(url).port
            c.connect("127.0.0.1", port)
            c.loop_start()
            clients.append(c)
        try:
            assert done.wait(90), f"fire: {fire}, market: {market}"
            assert seen_other.wait(60), f"every alert: {every}"
        finally:
            for c in clients:
                c.loop_stop()
                c.disconnect()
        assert any(t == "fire.alarm" for _, t in fire)
        assert all(topic.startswith("anju/alerts/fire/330402/") for topic, _ in fire), fire
        assert any(t == "elevator.trapped" for _, t in market)
        assert all(
            topic.startswith("anju/alerts/market_supervision/330402/") for topic, _ in market
        ), market

        # Refused: plaintext on the TLS port, anonymous over TLS, a wrong password, the wrong CA;
        # anonymous on a LAN broker.
        assert _refused(f"mqtt://127.0.0.1:{alerts.port}", None)
        assert _refused(f"mqtts://127.0.0.1:{alerts.port}", ca)
        assert _refused(f"mqtts://{alerts.username}:wrong-password@127.0.0.1:{alerts.port}", ca)
        assert _refused(endpoints["alerts_mqtt"], None)  # the system's CAs do not know it
        assert _refused(f"mqtt://127.0.0.1:{lan.port}", None)
        # ... and the control: the same CONNECT with the printed credentials is let in.
        assert not _refused(endpoints["alerts_mqtt"], ca)
        assert not _refused(endpoints["lan_mqtt"]["gw-jx-nh-0001-a"], None)

        # The API wants the token.
        api = endpoints["api"]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{api}/api/alerts", timeout=10)
        assert denied.value.code == 401
        denied.value.close()
        req = urllib.request.Request(
            f"{api}/api/alerts", headers={"Authorization": f"Bearer {endpoints['api_token']}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200 and json.loads(r.read())

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 20, err
        assert proc.returncode == 0, err
        assert "elevator.trapped" in out and "fire.alarm" in out
        assert "bldg None" not in out
        assert _processes_mentioning(str(data)) == []
        assert _processes_mentioning(str(_pgdata(data))) == []
        backend_log = (data / "logs" / "backend.log").read_text()
        assert " WARNING " not in backend_log and " ERROR " not in backend_log, backend_log
        assert "+0800 INFO" in backend_log  # the deployment's time zone
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
