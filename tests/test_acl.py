"""Broker ACLs from the registry, on a real Mosquitto: subscribers stay inside their own prefix,
a gateway publishes only as itself, devices only under their own id."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from anju.acl import write_broker_files
from anju.registry import load_registry
from anju.servers import PrivateMosquitto

pytestmark = pytest.mark.integration


def _clear_and_hash(passwd: Path) -> dict[str, str]:
    users = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    exe = shutil.which("mosquitto_passwd")
    assert exe, "mosquitto_passwd comes with Mosquitto: sudo apt-get install mosquitto"
    subprocess.run([exe, "-U", str(passwd)], check=True, timeout=30)
    return users


class Client:
    def __init__(self, port: int, user: str, password: str) -> None:
        self.got: list[str] = []
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}")
        self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        (self.refused if getattr(rc, "is_failure", False) else self.connected).set()

    def sub(self, topic: str) -> None:
        assert self.connected.wait(5)
        self.c.subscribe(topic, qos=1)
        time.sleep(0.2)

    def pub(self, topic: str) -> None:
        assert self.connected.wait(5)
        self.c.publish(topic, b"{}", qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def secured(tmp_path: Path, city_file: Path) -> Iterator[tuple[PrivateMosquitto, dict[str, str]]]:
    out = tmp_path / "acl"
    write_broker_files(load_registry(city_file), out)
    assert (out / "backend.passwd").stat().st_mode & 0o077 == 0
    users = _clear_and_hash(out / "backend.passwd")
    broker = PrivateMosquitto(
        tmp_path / "b",
        name="secured",
        password_file=out / "backend.passwd",
        acl_file=out / "backend.acl",
    ).start()
    yield broker, users
    broker.stop()


def test_subscribers_see_only_their_own_prefix(
    secured: tuple[PrivateMosquitto, dict[str, str]],
) -> None:
    broker, users = secured
    fire_nh = Client(broker.port, "fire.330402", users["fire.330402"])
    vanke = Client(broker.port, "property.org-vanke-jx", users["property.org-vanke-jx"])
    backend = Client(broker.port, "anju-backend", users["anju-backend"])
    try:
        fire_nh.sub("anju/alerts/#")  # asks for everything: gets only its own
        fire_nh.sub("anju/alerts/fire/330411/#")  # asks for another district: gets nothing
        vanke.sub("anju/alerts/property/#")
        topics = [
            "anju/alerts/fire/330402/jx-nh-0001/fire.alarm",
            "anju/alerts/fire/330411/jx-xz-0001/fire.alarm",
            "anju/alerts/property/org-greentown-jx/jx-nh-0001/fire.alarm",
            "anju/alerts/property/org-vanke-jx/jx-xz-0001/fire.alarm",
        ]
        for t in topics:
            backend.pub(t)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (fire_nh.got and vanke.got):
            time.sleep(0.05)
        time.sleep(0.3)
        assert fire_nh.got == [topics[0]]
        assert vanke.got == [topics[3]]
    finally:
        for c in (fire_nh, vanke, backend):
            c.close()


def test_a_gateway_publishes_only_as_itself_and_bad_passwords_are_refused(
    secured: tuple[PrivateMosquitto, dict[str, str]],
) -> None:
    broker, users = secured
    backend = Client(broker.port, "anju-backend", users["anju-backend"])
    gw = Client(broker.port, "gw-jx-nh-0001-a", users["gw-jx-nh-0001-a"])
    wrong = Client(broker.port, "gw-jx-xz-0001-a", "not-the-password")
    try:
        backend.sub("anju/gw/+/up")
        gw.pub("anju/gw/gw-jx-xz-0001-a/up")  # pretending to be another gateway
        gw.pub("anju/gw/gw-jx-nh-0001-a/up")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not backend.got:
            time.sleep(0.05)
        time.sleep(0.3)
        assert backend.got == ["anju/gw/gw-jx-nh-0001-a/up"]
        assert wrong.refused.wait(5)
    finally:
        for c in (backend, gw, wrong):
            c.close()


def test_devices_publish_only_under_their_own_id(tmp_path: Path, city_file: Path) -> None:
    out = tmp_path / "acl"
    write_broker_files(load_registry(city_file), out)
    name = "lan-gw-jx-nh-0001-a"
    users = _clear_and_hash(out / f"{name}.passwd")
    broker = PrivateMosquitto(
        tmp_path / "lan",
        name=name,
        password_file=out / f"{name}.passwd",
        acl_file=out / f"{name}.acl",
    ).start()
    dev_id, other = "jx-nh-0001-smoke-3-1201", "jx-nh-0001-smoke-3-0801"
    gw = Client(broker.port, "gw-jx-nh-0001-a", users["gw-jx-nh-0001-a"])
    dev = Client(broker.port, dev_id, users[dev_id])
    try:
        gw.sub("anju/dev/#")
        dev.pub(f"anju/dev/{other}/event")
        dev.pub(f"anju/dev/{dev_id}/event")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not gw.got:
            time.sleep(0.05)
        time.sleep(0.3)
        assert gw.got == [f"anju/dev/{dev_id}/event"]
    finally:
        gw.close()
        dev.close()
        broker.stop()
