"""`anju provision` output on a real Mosquitto (TLS listener with the city's CA, the generated
password files and ACLs, use_username_as_clientid): subscribers stay inside their scope,
devices and gateways speak only as themselves, nobody takes over another's session, plain or
wrong-CA connections are refused, rotated credentials stop working."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from anju.provision import Identity, Listener, ProvisionResult, mosquitto_conf, provision
from anju.provision.model import BrokerFiles
from anju.servers import _die_with_parent, find_mosquitto, free_port, stop_process, wait_port

pytestmark = pytest.mark.integration


@dataclass
class Broker:
    proc: subprocess.Popen[bytes]
    tls_port: int
    plain_port: int
    log: Path

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password file and ACL."""
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)


def start(files: BrokerFiles, data: Path, *, mtls: bool = False) -> Broker:
    data.mkdir(parents=True, exist_ok=True)
    tls_port, plain_port = free_port(), free_port()
    conf = data / "mosquitto.conf"
    conf.write_text(
        mosquitto_conf(
            files,
            [Listener(tls_port, require_certificate=mtls), Listener(plain_port, tls=False)],
            data_dir=data,
            log_file=data / "mosquitto.log",
            run_as_root=os.geteuid() == 0,
        )
    )
    proc = subprocess.Popen(
        [find_mosquitto(), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    wait_port(tls_port, 10, proc)
    wait_port(plain_port, 10, proc)
    return Broker(proc, tls_port, plain_port, data / "mosquitto.log")


class Client:
    """A paho client on the TLS listener (or plain), recording what it receives."""

    def __init__(
        self,
        port: int,
        user: str,
        password: str,
        *,
        ca: Path | None,
        client_id: str = "",
        clean: bool = True,
        connect: bool = True,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.refused = threading.Event()
        self.dropped = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}", clean_session=clean
        )
        self.c.username_pw_set(user, password)
        if ca is not None:
            certfile, keyfile = (str(cert[0]), str(cert[1])) if cert else (None, None)
            self.c.tls_set(ca_certs=str(ca), certfile=certfile, keyfile=keyfile)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda *_a: self.dropped.set()
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, m.payload))
        self.port = port
        if connect:
            self.start()

    def start(self) -> None:
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        (self.refused if getattr(rc, "is_failure", False) else self.connected).set()

    def sub(self, topic: str) -> None:
        assert self.connected.wait(5), "not connected"
        self.c.subscribe(topic, qos=1)
        time.sleep(0.2)

    def pub(self, topic: str, payload: bytes = b"{}") -> None:
        assert self.connected.wait(5), "not connected"
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> list[str]:
        return [t for t, _ in self.got]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(check: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not check():  # type: ignore[operator]
        time.sleep(0.05)
    time.sleep(0.3)  # and a little longer: anything that should not arrive has had its chance


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    from tests.conftest import DATA

    return provision(DATA / "city.yaml", tmp_path_factory.mktemp("city"))


@pytest.fixture
def backend_broker(city: ProvisionResult, tmp_path: Path) -> Iterator[Broker]:
    b = start(city.backend, tmp_path / "backend-broker")
    yield b
    stop_process(b.proc)


def tls(b: Broker, who: Identity, city: ProvisionResult, **kw: object) -> Client:
    return Client(b.tls_port, who.username, who.password, ca=city.ca_file, **kw)  # type: ignore[arg-type]


def test_subscribers_stay_inside_their_district_and_company(
    city: ProvisionResult, backend_broker: Broker
) -> None:
    nh = tls(backend_broker, city.subscriber("fire", "330402"), city)
    a = tls(backend_broker, city.subscriber("property", "org-greentown-jx"), city)
    backend = tls(backend_broker, city.identity("backend", "anju-backend"), city)
    viewer = tls(backend_broker, city.identity("backend", "anju-alerts"), city)
    try:
        nh.sub("anju/alerts/#")  # asks for everything: gets only its own
        nh.sub("anju/alerts/fire/330411/#")  # another district: nothing
        a.sub("anju/alerts/property/#")  # every company: only its own
        viewer.sub("anju/alerts/#")
        topics = [
            "anju/alerts/fire/330402/jx-nh-0001/fire.alarm",
            "anju/alerts/fire/330411/jx-xz-0001/fire.alarm",
            "anju/alerts/property/org-greentown-jx/jx-nh-0001/fire.alarm",
            "anju/alerts/property/org-vanke-jx/jx-xz-0001/fire.alarm",
        ]
        for t in topics:
            backend.pub(t)
        wait_for(lambda: len(viewer.got) == 4 and nh.got and a.got)
        assert nh.topics() == [topics[0]]
        assert a.topics() == [topics[2]]
        assert sorted(viewer.topics()) == sorted(topics)
        viewer.pub("anju/alerts/fire/330402/jx-nh-0001/fake")  # read-only: dropped
        a.pub("anju/gw/gw-jx-nh-0001-a/ack")  # subscribers publish nothing
        wait_for(lambda: len(nh.got) > 1, within=1.0)
        assert nh.topics() == [topics[0]]
    finally:
        for c in (nh, a, backend, viewer):
            c.close()


def test_a_gateway_speaks_only_as_itself_and_reads_only_its_own_acks(
    city: ProvisionResult, backend_broker: Broker
) -> None:
    backend = tls(backend_broker, city.identity("backend", "anju-backend"), city)
    gw = tls(backend_broker, city.identity("backend", "gw-jx-nh-0001-a"), city)
    try:
        backend.sub("anju/gw/+/up")
        gw.sub("anju/gw/+/ack")  # every gateway's acks: gets only its own
        gw.pub("anju/gw/gw-jx-xz-0001-a/up")  # pretending to be another gateway
        gw.pub("anju/gw/gw-jx-nh-0001-a/up")
        backend.pub("anju/gw/gw-jx-xz-0001-a/ack")
        backend.pub("anju/gw/gw-jx-nh-0001-a/ack")
        wait_for(lambda: backend.got and gw.got)
        assert backend.topics() == ["anju/gw/gw-jx-nh-0001-a/up"]
        assert gw.topics() == ["anju/gw/gw-jx-nh-0001-a/ack"]
    finally:
        for c in (backend, gw):
            c.close()


def test_nobody_takes_over_another_clients_id_or_session(
    city: ProvisionResult, backend_broker: Broker
) -> None:
    gw_id = city.identity("backend", "gw-jx-nh-0001-a")
    backend = tls(backend_broker, city.identity("backend", "anju-backend"), city)
    gw = tls(backend_broker, gw_id, city, client_id=gw_id.username, clean=False)
    try:
        gw.sub(f"anju/gw/{gw_id.username}/ack")
        gw.close()
        backend.pub(f"anju/gw/{gw_id.username}/ack", b"queued")  # waits in the gateway's session
        # Another user claims the gateway's client id with a clean session (which, were the id
        # honoured, would wipe the queued ack) and subscribes to what it can.
        thief = tls(
            backend_broker, city.subscriber("fire", "330402"), city,
            client_id=gw_id.username, clean=True,
        )  # fmt: skip
        assert thief.connected.wait(5)
        thief.sub("#")
        gw2 = tls(backend_broker, gw_id, city, client_id="anything", clean=False)
        wait_for(lambda: gw2.got)
        assert gw2.got == [(f"anju/gw/{gw_id.username}/ack", b"queued")]
        assert thief.got == []
        # While the gateway is connected, the thief's reconnecting with its id does not kick it.
        thief.close()
        thief2 = tls(
            backend_broker, city.subscriber("fire", "330402"), city, client_id=gw_id.username
        )
        assert thief2.connected.wait(5)
        time.sleep(0.5)
        assert not gw2.dropped.is_set()
        thief2.close()
        gw2.close()
    finally:
        backend.close()


def _connect_packet(user: str, password: str) -> bytes:
    def field(b: bytes) -> bytes:
        return len(b).to_bytes(2, "big") + b

    var = field(b"MQTT") + bytes([4, 0xC2]) + (30).to_bytes(2, "big")
    body = var + field(b"probe") + field(user.encode()) + field(password.encode())
    return bytes([0x10, len(body)]) + body


def test_plaintext_and_wrong_ca_are_refused_on_the_tls_listener(
    city: ProvisionResult, backend_broker: Broker, tmp_path: Path
) -> None:
    fire = city.subscriber("fire", "330402")
    # A plain MQTT CONNECT with a good password gets no CONNACK from the TLS listener.
    with socket.create_connection(("127.0.0.1", backend_broker.tls_port), timeout=5) as s:
        s.sendall(_connect_packet(fire.username, fire.password))
        try:
            answer = s.recv(4)
        except (ConnectionResetError, TimeoutError):
            answer = b""
        assert not answer.startswith(b"\x20")
    # A TLS client that trusts another city's CA refuses the broker's certificate.
    other = provision(_registry(), tmp_path / "other-city")
    bad = ssl.create_default_context(cafile=str(other.ca_file))
    with (
        socket.create_connection(("127.0.0.1", backend_broker.tls_port), timeout=5) as s,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        bad.wrap_socket(s, server_hostname="127.0.0.1")
    # ... and with the city's CA the same handshake succeeds (names: 127.0.0.1, localhost).
    good = ssl.create_default_context(cafile=str(city.ca_file))
    for host in ("127.0.0.1", "localhost"):
        with (
            socket.create_connection(("127.0.0.1", backend_broker.tls_port), timeout=5) as s,
            good.wrap_socket(s, server_hostname=host) as t,
        ):
            assert t.version() in ("TLSv1.2", "TLSv1.3")


def _registry() -> Path:
    from tests.conftest import DATA

    return DATA / "city.yaml"


def test_rotated_gateway_credentials_are_refused(
    city: ProvisionResult, backend_broker: Broker, tmp_path: Path
) -> None:
    old = city.identity("backend", "gw-jx-xz-0001-a")
    before = tls(backend_broker, old, city)
    assert before.connected.wait(5)
    before.close()
    again = provision(_registry(), city.out_dir, rotate=["gw-jx-xz-0001-a"])
    assert again.rotated == ("backend/gw-jx-xz-0001-a", "lan/gw-jx-xz-0001-a/gw-jx-xz-0001-a")
    new = again.identity("backend", "gw-jx-xz-0001-a")
    assert new.password != old.password
    fire = again.subscriber("fire", "330402")  # everyone else keeps their password
    assert fire.password == city.subscriber("fire", "330402").password
    backend_broker.reload()
    refused = tls(backend_broker, old, city)
    accepted = tls(backend_broker, new, city)
    kept = tls(backend_broker, fire, city)
    try:
        assert refused.refused.wait(5)
        assert accepted.connected.wait(5)
        assert kept.connected.wait(5)
    finally:
        for c in (refused, accepted, kept):
            c.close()


def test_devices_publish_only_as_themselves_on_the_lan_broker(
    city: ProvisionResult, tmp_path: Path
) -> None:
    gid = "gw-jx-nh-0001-a"
    b = start(city.lan[gid], tmp_path / "lan")
    me, other = "jx-nh-0001-smoke-3-1201", "jx-nh-0001-smoke-3-0801"
    gw = tls(b, city.identity(f"lan/{gid}", gid), city)
    dev = tls(b, city.identity(f"lan/{gid}", me), city)
    installer = tls(b, city.identity(f"lan/{gid}", f"installer.{gid}"), city)
    try:
        gw.sub("anju/dev/#")
        dev.pub(f"anju/dev/{other}/event")  # as another device: dropped
        dev.pub(f"anju/dev/{me}/event")
        installer.pub(f"anju/dev/{other}/event")  # the installer may speak for any device
        wait_for(lambda: len(gw.got) >= 2)
        assert gw.topics() == [f"anju/dev/{me}/event", f"anju/dev/{other}/event"]
        assert dev.got == []
    finally:
        for c in (gw, dev, installer):
            c.close()
        stop_process(b.proc)


def test_a_rotated_gateways_old_certificate_is_revoked(tmp_path: Path) -> None:
    """With mutual TLS, rotation puts the old client certificate on the CA's revocation list:
    even with the new password, the old certificate is refused."""
    city = provision(_registry(), tmp_path / "city")
    gid = "gw-jx-nh-0001-a"
    old = city.identity("backend", gid)
    assert old.cert_file and old.key_file
    old_pair = (tmp_path / "old.crt", tmp_path / "old.key")
    old_pair[0].write_bytes(old.cert_file.read_bytes())
    old_pair[1].write_bytes(old.key_file.read_bytes())
    b = start(city.backend, tmp_path / "broker", mtls=True)
    try:
        ok = Client(b.tls_port, gid, old.password, ca=city.ca_file, cert=old_pair)
        assert ok.connected.wait(5)
        ok.close()
        again = provision(_registry(), city.out_dir, rotate=[gid])
        new = again.identity("backend", gid)
        assert new.cert_file and new.key_file
        assert json.loads((city.out_dir / "revoked.json").read_text())
        stop_process(b.proc)  # a restart reads the new revocation list and passwords
        b = start(city.backend, tmp_path / "broker", mtls=True)
        stale = Client(b.tls_port, gid, new.password, ca=city.ca_file, cert=old_pair,
                       connect=False)  # fmt: skip
        with pytest.raises((ssl.SSLError, OSError)):
            stale.c.connect("127.0.0.1", b.tls_port)
            stale.c.loop_start()
            assert not stale.connected.wait(3)
            raise ConnectionError("refused after the handshake")
        stale.c.loop_stop()
        fresh = Client(b.tls_port, gid, new.password, ca=city.ca_file,
                       cert=(new.cert_file, new.key_file))  # fmt: skip
        assert fresh.connected.wait(5)
        fresh.close()
        # Control: the same old certificate with an empty revocation list gets in (so the
        # refusal above is the list's doing).
        from anju.provision import pki

        ca, _ = pki.load_or_create_ca(city.ca_file, city.out_dir / "ca.key", org="anju")
        pki.revocation_list(ca, city.backend.crl_file, {}, force=True)
        stop_process(b.proc)
        b = start(city.backend, tmp_path / "broker", mtls=True)
        control = Client(b.tls_port, gid, new.password, ca=city.ca_file, cert=old_pair)
        assert control.connected.wait(5)
        control.close()
    finally:
        stop_process(b.proc)
