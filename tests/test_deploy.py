"""deploy/: Prometheus configuration and rules pass `promtool`; dashboards are JSON whose every
metric (like every alert rule's) exists in the code; the compose file pins every image; the
shipped Mosquitto configurations run on a real Mosquitto with `anju provision` output; the
gateway install script lays out a gateway that loads."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from anju.errors import ServerError
from anju.provision import ProvisionResult, provision
from anju.servers import _die_with_parent, find_mosquitto, free_port, stop_process, wait_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DATA = Path(__file__).resolve().parent / "data"


def promtool() -> str:
    exe = shutil.which("promtool")
    assert exe, (
        "promtool was not found; it comes with Debian's prometheus package: "
        "sudo apt-get install --no-install-recommends prometheus (scripts/bootstrap, as root)"
    )
    return exe


def test_prometheus_configuration_and_rules_pass_promtool(tmp_path: Path) -> None:
    rules = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
    assert rules
    out = subprocess.run(
        [promtool(), "check", "rules", *map(str, rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The configuration, with its rule files where the container has them.
    conf = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "rules").mkdir()
    for r in rules:
        shutil.copy(r, tmp_path / "rules" / r.name)
    conf = conf.replace("/etc/prometheus/", f"{tmp_path}/")
    (tmp_path / "gateways").mkdir()
    shutil.copy(DEPLOY / "prometheus" / "gateways" / "example.json", tmp_path / "gateways")
    (tmp_path / "prometheus.yml").write_text(conf)
    out = subprocess.run(
        [promtool(), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rule files found" in out.stdout + out.stderr or "SUCCESS" in (
        out.stdout + out.stderr
    )


_DEFINED = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(anju_[a-z0-9_]+)\"", re.S)


def metrics_in_code() -> dict[str, str]:
    """Every anju_* metric the code defines, with its type."""
    found: dict[str, str] = {}
    for pkg in ("anju", "backend", "gateway"):
        for py in (ROOT / pkg).rglob("*.py"):
            for kind, name in _DEFINED.findall(py.read_text(encoding="utf-8")):
                found[name] = kind
    return found


def exposed_names(defined: dict[str, str]) -> set[str]:
    """The series names Prometheus sees (counters get _total, histograms _bucket/_sum/_count)."""
    out: set[str] = set()
    for name, kind in defined.items():
        if kind == "Counter":
            out |= {f"{name}_total", f"{name}_created"}
        elif kind in ("Histogram", "Summary"):
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            out.add(name)
    return out


def referenced(expr: str) -> set[str]:
    return set(re.findall(r"\banju_[a-z0-9_]+", expr))


def dashboards() -> list[Path]:
    return sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def test_dashboards_are_json_and_cover_ingest_gateways_alert_latency_and_queues() -> None:
    uids = set()
    for path in dashboards():
        d = json.loads(path.read_text(encoding="utf-8"))
        assert d["title"] and d["uid"] and d["panels"], path
        uids.add(d["uid"])
        for p in d["panels"]:
            assert p["targets"], f"{path}: panel {p['title']!r} has no query"
            assert p["datasource"]["uid"] == "anju-prometheus"
    assert {"anju-ingest", "anju-gateways", "anju-alert-latency", "anju-queues"} <= uids
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "anju-prometheus"
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/anju.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_metric_a_dashboard_or_rule_names_exists_in_the_code() -> None:
    defined = metrics_in_code()
    assert "anju_alert_latency_seconds" in defined and "anju_gateway_outbox_depth" in defined
    exposed = exposed_names(defined)
    used: dict[str, str] = {}
    for path in dashboards():
        for p in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for t in p["targets"]:
                used |= dict.fromkeys(referenced(t["expr"]), f"{path.name}: {p['title']}")
    for path in (DEPLOY / "prometheus" / "rules").glob("*.yml"):
        for g in yaml.safe_load(path.read_text())["groups"]:
            for r in g["rules"]:
                used |= dict.fromkeys(referenced(r["expr"]), f"{path.name}: {r['alert']}")
    assert len(used) > 20
    missing = {name: where for name, where in used.items() if name not in exposed}
    assert not missing, f"metrics named but not defined in the code (or wrong suffix): {missing}"


def test_compose_pins_every_image_and_builds_the_worker_here() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"timescaledb", "mosquitto", "backend", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        image = svc.get("image", "")
        assert re.fullmatch(r"[a-z0-9./_-]+:v?\d+(\.\d+)+[a-z0-9.+-]*", image), (
            f"service {name}: image {image!r} is not pinned to a version"
        )
    build = services["backend"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base[1]), "the Dockerfile's base is not pinned"
    for mount in ("./mosquitto/compose.conf", "./prometheus/prometheus.yml", "./emqx/anju.hocon"):
        assert (DEPLOY / mount).is_file(), mount


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    return provision(DATA / "city.yaml", tmp_path_factory.mktemp("city"))


def _run_mosquitto(conf_text: str, data: Path, ports: list[int]) -> subprocess.Popen[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        conf_text += "user root\n"
    conf_text = conf_text.replace("log_dest stdout", f"log_dest file {data}/mosquitto.log")
    (data / "mosquitto.conf").write_text(conf_text)
    with (data / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(data / "mosquitto.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=_die_with_parent,
        )
    try:
        for p in ports:
            wait_port(p, 10, proc)
    except ServerError as exc:
        stop_process(proc)
        log = (data / "stderr.log").read_text() + (data / "mosquitto.log").read_text()
        raise AssertionError(f"mosquitto refused the configuration: {exc}\n{log}") from exc
    return proc


def _tls_ok(port: int, ca: Path) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as s,
        ctx.wrap_socket(s, server_hostname="localhost") as t,
    ):
        assert t.version()


@pytest.mark.integration
def test_shipped_lan_conf_runs_bound_to_the_lan_address_with_tls(
    city: ProvisionResult, tmp_path: Path
) -> None:
    plain, tls_port = free_port(), free_port()
    text = (DEPLOY / "mosquitto" / "lan.conf").read_text()
    assert "listener 1883 LAN_ADDRESS" in text and "listener 8883 LAN_ADDRESS" in text
    assert re.search(r"^listener \d+\s*$", text, re.M) is None, "a listener on every interface"
    text = (
        text.replace("LAN_ADDRESS", "127.0.0.2")  # the LAN (a loopback address of its own here)
        .replace("listener 1883 127.0.0.1", f"listener {free_port()} 127.0.0.1")
        .replace("listener 1883 127.0.0.2", f"listener {plain} 127.0.0.2")
        .replace("listener 8883 127.0.0.2", f"listener {tls_port} 127.0.0.2")
        .replace("/etc/mosquitto/anju", str(city.lan["gw-jx-nh-0001-a"].dir))
        .replace("/var/lib/mosquitto/", f"{tmp_path}/")
    )
    proc = _run_mosquitto(text, tmp_path, [])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.2", tls_port)) == 0:
                    break
            time.sleep(0.05)
        ctx = ssl.create_default_context(cafile=str(city.ca_file))
        with (
            socket.create_connection(("127.0.0.2", tls_port), timeout=5) as s,
            ctx.wrap_socket(s, server_hostname="gw-jx-nh-0001-a") as t,
        ):
            assert t.version()
        with socket.socket() as s:  # not on 127.0.0.1 at that port: bound to the LAN only
            assert s.connect_ex(("127.0.0.1", tls_port)) != 0
    finally:
        stop_process(proc)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["backend.conf", "compose.conf"])
def test_shipped_backend_confs_run_with_provisioned_files(
    name: str, city: ProvisionResult, tmp_path: Path
) -> None:
    tls_port, local = free_port(), free_port()
    text = (DEPLOY / "mosquitto" / name).read_text()
    assert text.count("use_username_as_clientid true") == text.count("\nlistener ")
    text = (
        text.replace("listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
        .replace("listener 1883 127.0.0.1", f"listener {local} 127.0.0.1")
        .replace("/etc/mosquitto/anju", str(city.backend.dir))
        .replace("/mosquitto/config/anju", str(city.backend.dir))
        .replace("/var/lib/mosquitto/", f"{tmp_path}/")
        .replace("/mosquitto/data/", f"{tmp_path}/")
    )
    proc = _run_mosquitto(text, tmp_path, [tls_port])
    try:
        _tls_ok(tls_port, city.ca_file)
    finally:
        stop_process(proc)


@pytest.mark.integration
def test_gateway_install_script_lays_out_a_gateway_that_loads(
    city: ProvisionResult, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    env = {
        **os.environ,
        "ANJU_ROOT": str(root),
        "ANJU_SPEC": "none",
        "ANJU_PYTHON": str(ROOT / ".venv" / "bin" / "python"),
    }
    args = [
        "bash", str(DEPLOY / "gateway" / "install.sh"), "--gateway", "gw-jx-nh-0001-a",
        "--city", str(city.out_dir), "--lan-address", "192.168.10.1",
        "--backend-url", "mqtts://broker.example.org:8883",
    ]  # fmt: skip
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    conf = (root / "etc/mosquitto/mosquitto.conf").read_text()
    assert "listener 1883 192.168.10.1" in conf and "LAN_ADDRESS" not in conf
    assert (root / "etc/mosquitto/anju/passwd").stat().st_mode & 0o777 == 0o640
    assert (root / "etc/anju/gw-jx-nh-0001-a.key").stat().st_mode & 0o777 == 0o640
    cfg_path = root / "etc/anju/gateway.yaml"
    assert cfg_path.stat().st_mode & 0o777 == 0o640
    from gateway.config import load_gateway_config

    cfg = load_gateway_config(cfg_path)
    assert cfg.uplink.url == "mqtts://broker.example.org:8883"
    assert cfg.uplink.password == city.identity("backend", "gw-jx-nh-0001-a").password
    assert cfg.lan.password == city.identity("lan/gw-jx-nh-0001-a", "gw-jx-nh-0001-a").password
    assert str(cfg.uplink.cert_file) == "/etc/anju/gw-jx-nh-0001-a.crt"
    # Refuses a plain uplink and a LAN address of every interface.
    bad = subprocess.run(
        [*args[:-1], "mqtt://broker.example.org:1883"], env=env, capture_output=True, timeout=60
    )
    assert bad.returncode == 2
    bad = subprocess.run(
        [*args[:7], "0.0.0.0", *args[8:]], env=env, capture_output=True, timeout=60
    )
    assert bad.returncode == 2
