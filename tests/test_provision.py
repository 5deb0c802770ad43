"""`anju provision` without a broker: Mosquitto's own password format, re-runs that keep every
identity, rotation, file modes, tokens the backend takes as they are, EMQX rules, a command line
that prints no secret; and the backend's MQTT settings (TLS, no password in clear)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from anju.cli import main
from anju.errors import ConfigError
from anju.mqtturl import check_password_transport, parse_mqtt_url
from anju.provision import (
    Listener,
    ProvisionResult,
    hash_password,
    load_token_digests,
    mosquitto_conf,
    provision,
    verify_password,
)
from backend.config import AlertingConfig, BackendSettings

DATA = Path(__file__).resolve().parent / "data"
CITY = DATA / "city.yaml"


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    return provision(CITY, tmp_path_factory.mktemp("city"), hostnames=["broker.example.org"])


def test_our_hashes_read_like_mosquitto_passwd_and_verify_its_own(tmp_path: Path) -> None:
    exe = shutil.which("mosquitto_passwd")
    assert exe, "mosquitto_passwd comes with Mosquitto: sudo apt-get install mosquitto"
    pw = tmp_path / "pw"
    pw.write_text("")
    subprocess.run([exe, "-b", str(pw), "alice", "s3cret:with$odd chars"], check=True, timeout=30)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret:with$odd chars", theirs)
    assert not verify_password("s3cret", theirs)
    ours = hash_password("s3cret")
    shape = r"^\$7\$\d+\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$"
    assert re.match(shape, theirs) and re.match(shape, ours)
    assert verify_password("s3cret", ours) and not verify_password("s3cret ", ours)
    assert not verify_password("x", "$6$not-a-mosquitto-hash")


@settings(max_examples=25, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_hash_round_trip(password: str) -> None:
    h = hash_password(password, iterations=2)
    assert verify_password(password, h)
    assert not verify_password(password + "x", h)


def test_identities_for_every_party_of_the_registry(city: ProvisionResult) -> None:
    subs = city.subscribers()
    assert {
        "fire/330402", "fire/330411", "market_supervision/330402", "public_security/330402",
        "construction/330411", "property/org-greentown-jx", "community/jx-nh-0001",
    } <= set(subs)  # fmt: skip
    assert any(k.startswith("maintenance/") for k in subs)
    roles = {i.role for i in city.identities.values()}
    assert roles == {"backend", "backend-events", "operator", "viewer", "gateway", "subscriber",
                     "installer", "device"}  # fmt: skip
    gw = city.identity("backend", "gw-jx-nh-0001-a")
    assert gw.cert_file and gw.cert_file.exists() and gw.key_file and gw.key_file.exists()
    worker = city.identity("backend", "anju-backend")
    assert city.identity("backend", "anju-backend-events").password == worker.password
    assert set(city.lan) == {"gw-jx-nh-0001-a", "gw-jx-xz-0001-a"}
    lan_users = city.backend.password_file.read_text()
    assert "jx-nh-0001-smoke-3-1201" not in lan_users  # devices live on their LAN broker only
    assert "jx-nh-0001-smoke-3-1201:" in city.lan["gw-jx-nh-0001-a"].password_file.read_text()
    assert "broker.example.org" in city.backend.hosts
    url = city.subscriber("fire", "330402").url("127.0.0.1", 8883)
    addr = parse_mqtt_url(url)
    assert addr.tls and addr.username == "fire.330402"
    assert addr.password == city.subscriber("fire", "330402").password


def test_secrets_are_readable_by_their_owner_only(city: ProvisionResult) -> None:
    def mode(p: Path) -> int:
        return p.stat().st_mode & 0o777

    out = city.out_dir
    assert mode(out / "secrets.json") == 0o600
    assert mode(out / "ca.key") == 0o600
    assert mode(city.backend.password_file) == 0o640
    assert mode(city.backend.key_file) == 0o640
    assert mode(city.tokens_file) == 0o640
    assert mode(out / "gateways" / "gw-jx-nh-0001-a.yaml") == 0o600
    assert mode(out / "workers" / "anju-backend.env") == 0o600
    assert mode(out / "clients" / "gw-jx-nh-0001-a.key") == 0o600
    assert mode(out) & 0o007 == 0
    for f in (city.backend.password_file, city.tokens_file, city.backend.dir / "emqx-users.json"):
        text = f.read_text()
        for ident in list(city.identities.values())[:10]:
            assert ident.password not in text, f"{f} holds a clear password"


def test_a_rerun_keeps_everything_and_adds_what_the_registry_gained(tmp_path: Path) -> None:
    out = tmp_path / "city"
    first = provision(CITY, out)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "README.txt"}
    again = provision(CITY, out)
    assert again.created == again.rotated == again.removed == ()
    assert again.certificates_issued == ()
    assert {p: p.read_bytes() for p in files} == files  # byte for byte
    # The registry gains a community (with a gateway and a device): only those are new.
    reg = yaml.safe_load(CITY.read_text(encoding="utf-8"))
    com = dict(reg["communities"][0])
    com.update(id="jx-nh-0099", gateways=[{"id": "gw-jx-nh-0099-a"}],
               devices=[{"id": "jx-nh-0099-smoke-1", "kind": "smoke_detector",
                         "gateway": "gw-jx-nh-0099-a", "building": "1"}])  # fmt: skip
    reg["communities"].append(com)
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(reg, allow_unicode=True), encoding="utf-8")
    grown = provision(bigger, out)
    assert set(grown.created) == {
        "backend/gw-jx-nh-0099-a",
        "backend/community.jx-nh-0099",
        "lan/gw-jx-nh-0099-a/gw-jx-nh-0099-a",
        "lan/gw-jx-nh-0099-a/installer.gw-jx-nh-0099-a",
        "lan/gw-jx-nh-0099-a/jx-nh-0099-smoke-1",
        "api/community.jx-nh-0099",
    }
    for key, ident in first.identities.items():
        assert grown.identities[key].password == ident.password, key
    assert grown.tokens["admin"].token == first.tokens["admin"].token
    # Back to the old registry: the extra community's identities are gone from every file.
    back = provision(CITY, out)
    assert "backend/gw-jx-nh-0099-a" in back.removed
    assert "gw-jx-nh-0099-a" not in back.backend.password_file.read_text()
    assert "gw-jx-nh-0099-a" not in back.backend.acl_file.read_text()


def test_rotation_renews_only_what_it_names(tmp_path: Path) -> None:
    out = tmp_path / "city"
    first = provision(CITY, out)
    with pytest.raises(ConfigError, match="no identity called nobody"):
        provision(CITY, out, rotate=["nobody"])
    r = provision(CITY, out, rotate=["anju-backend", "fire.330402"])
    assert set(r.rotated) == {
        "backend/anju-backend", "backend/anju-backend-events", "backend/fire.330402",
        "api/fire.330402",
    }  # fmt: skip
    assert (
        r.identity("backend", "anju-backend").password
        != first.identity("backend", "anju-backend").password
    )
    assert (
        r.identity("backend", "anju-backend-events").password
        == r.identity("backend", "anju-backend").password
    )
    assert r.tokens["fire.330402"].token != first.tokens["fire.330402"].token
    assert r.tokens["admin"].token == first.tokens["admin"].token
    assert (
        r.identity("backend", "gw-jx-nh-0001-a").password
        == first.identity("backend", "gw-jx-nh-0001-a").password
    )
    assert out / "clients" / "anju-backend.crt" in r.certificates_issued
    assert len(r.certificates_issued) == 1


def test_tokens_file_is_what_alerting_yaml_takes(city: ProvisionResult) -> None:
    rows = load_token_digests(city.tokens_file)
    cfg = AlertingConfig.model_validate({"tokens": rows})
    by_name = {t.name: t for t in cfg.tokens}
    assert by_name["admin"].audience == "admin" and by_name["admin"].scope is None
    fire = by_name["fire.330402"]
    assert (fire.audience, fire.scope) == ("fire", "330402")
    assert fire.digest() == city.tokens["fire.330402"].sha256
    import hashlib

    assert hashlib.sha256(city.tokens["fire.330402"].token.encode()).hexdigest() == fire.digest()


def test_emqx_rules_mirror_mosquittos(city: ProvisionResult) -> None:
    text = (city.backend.dir / "emqx-acl.conf").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("%%")]
    assert lines[-1] == "{deny, all}."
    assert all(re.fullmatch(r"\{(allow|deny), (all|\{username, \"[^\"]+\"\}), "
                            r"(subscribe|publish|all), \[\"[^\"]+\"\]\}\.", ln)
               for ln in lines[:-1])  # fmt: skip
    assert '{allow, {username, "fire.330402"}, subscribe, ["anju/alerts/fire/330402/#"]}.' in lines
    # The workers may not push remote configuration: denied before their anju/# (first match).
    deny = '{deny, {username, "anju-backend"}, all, ["anju/gw/+/config"]}.'
    assert lines.index(deny) < lines.index('{allow, {username, "anju-backend"}, all, ["anju/#"]}.')
    users = json.loads((city.backend.dir / "emqx-users.json").read_text())
    assert {u["user_id"] for u in users} >= {"anju-backend", "fire.330402", "gw-jx-nh-0001-a"}
    assert all(re.fullmatch(r"[0-9a-f]{128}", u["password_hash"]) for u in users)


def test_the_command_prints_no_secret_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "city"
    assert main(["provision", "--registry", str(CITY), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    store = json.loads((out / "secrets.json").read_text())
    for s in store["passwords"].values():
        assert s["password"] not in printed.out + printed.err
    for t in store["tokens"].values():
        assert t["token"] not in printed.out + printed.err
    assert main(["provision", "--registry", str(CITY), "--out", str(out), "--show",
                 "fire.330402"]) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["backend/fire.330402"]["password"]
        == store["passwords"]["backend/fire.330402"]["password"]
    )
    assert shown["api/fire.330402"]["token"] == store["tokens"]["fire.330402"]["token"]
    assert main(["provision", "--registry", str(CITY), "--out", str(out), "--show", "x"]) == 2


def test_a_broken_secrets_file_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "city"
    out.mkdir()
    (out / "secrets.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"secrets\.json: not a provisioning secrets file"):
        provision(CITY, out)


def test_mosquitto_conf_puts_client_id_binding_on_every_listener(city: ProvisionResult) -> None:
    text = mosquitto_conf(
        city.backend, [Listener(8883), Listener(1883, tls=False)], data_dir=Path("/tmp/x")
    )
    head = text.split("\nlistener ", 1)[0]
    assert "use_username_as_clientid" not in head  # before a listener it opens port 1883
    assert text.count("use_username_as_clientid true") == 2
    assert "allow_anonymous false" in text and f"acl_file {city.backend.acl_file}" in text


# ---- the backend's MQTT settings -------------------------------------------------------------


def _settings(**kw: object) -> BackendSettings:
    return BackendSettings(database_url="postgresql://x@127.0.0.1/x", registry=CITY, **kw)  # type: ignore[arg-type]


def test_no_password_in_clear_to_a_host_that_is_not_loopback() -> None:
    with pytest.raises(ValueError, match="in clear"):
        _settings(mqtt_url="mqtt://u:p@broker.example.org:1883")
    _settings(mqtt_url="mqtt://u:p@broker.example.org:1883", mqtt_allow_plain_password=True)
    _settings(mqtt_url="mqtt://u:p@127.0.0.1:1883")
    _settings(mqtt_url="mqtt://u:p@localhost:1883")
    _settings(mqtt_url="mqtts://u:p@broker.example.org")
    _settings(mqtt_url="mqtt://broker.example.org:1883")  # no password: nothing to leak
    with pytest.raises(ValueError, match="go together"):
        _settings(mqtt_url="mqtts://u:p@h", mqtt_cert_file=Path("c.crt"))
    with pytest.raises(ConfigError):
        check_password_transport(parse_mqtt_url("mqtt://u:p@[::2]:1883"))
    check_password_transport(parse_mqtt_url("mqtt://u:p@[::1]:1883"))


@pytest.fixture
def mtls_port(city: ProvisionResult, tmp_path: Path) -> Iterator[int]:
    """A broker with the city's backend files that wants TLS and a client certificate."""
    from anju.servers import _die_with_parent, find_mosquitto, free_port, stop_process, wait_port

    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(
        mosquitto_conf(
            city.backend, [Listener(port, require_certificate=True)], data_dir=tmp_path,
            log_file=tmp_path / "m.log", run_as_root=os.geteuid() == 0,
        )
    )  # fmt: skip
    proc = subprocess.Popen(
        [find_mosquitto(), "-c", str(conf)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip
    try:
        wait_port(port, 10, proc)
        yield port
    finally:
        stop_process(proc)


@pytest.mark.integration
async def test_backend_sessions_over_mutual_tls_with_their_own_users(
    city: ProvisionResult, mtls_port: int
) -> None:
    """Both of a worker's sessions (main and alarm lane) on a broker that wants TLS, a client
    certificate and use_username_as_clientid: connected together, neither kicks the other."""
    import aiomqtt

    from backend.mqtt import uplink_client

    worker = city.identity("backend", "anju-backend")
    assert worker.cert_file and worker.key_file
    s = _settings(
        mqtt_url=worker.url("localhost", mtls_port),
        mqtt_ca_file=city.ca_file,
        mqtt_cert_file=worker.cert_file,
        mqtt_key_file=worker.key_file,
    )
    async with (
        uplink_client(s, s.client_id) as main_session,
        uplink_client(s, f"{s.client_id}-events") as events,
    ):
        await events.subscribe("anju/alerts/#", qos=1)
        await main_session.publish("anju/alerts/fire/330402/c/t", b"{}", qos=1)
        async with asyncio.timeout(10):
            async for msg in events.messages:
                assert str(msg.topic) == "anju/alerts/fire/330402/c/t"
                break
    # Without the client certificate the broker ends the TLS session: never connected.
    bare = _settings(mqtt_url=worker.url("localhost", mtls_port), mqtt_ca_file=city.ca_file)
    with pytest.raises((aiomqtt.MqttError, TimeoutError)):
        async with asyncio.timeout(5), uplink_client(bare, bare.client_id):
            pass


def test_two_parties_with_one_login_are_refused(tmp_path: Path) -> None:
    reg = yaml.safe_load(CITY.read_text(encoding="utf-8"))
    com = reg["communities"][0]
    gw = com["gateways"][0]["id"]
    com["devices"].append({"id": gw, "kind": "smoke_detector", "gateway": gw, "building": "1"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(reg, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"'{gw}' is both a gateway and a device"):
        provision(bad, tmp_path / "city")


def test_one_provision_at_a_time_on_a_folder(tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "city"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another `anju provision`"):
            provision(CITY, out)
    finally:
        os.close(fd)
    assert provision(CITY, out).created
