"""The adapters' threads under the gateway's supervision: an exception injected into each one in
turn (the sink's committer, a confirm, the UITD accept loop, a UITD connection, a Modbus poller)
is logged, counted and recovered from, and nothing the gateway confirmed is lost; a stuck sink
makes the gateway unhealthy (no watchdog pings); a relative register map is found next to the
configuration file."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from anju.servers import PrivateMosquitto
from device_simulators.adapter_rig import running_adapters
from device_simulators.modbus_elevator import ModbusElevator
from device_simulators.uitd import UitdClient
from gateway import Gateway, GatewayConfig, load_gateway_config
from gateway.adapters import gbt_server, modbus
from gateway.adapters.config import Gbt26875Config, ModbusConfig
from gateway.adapters.gbt26875 import ComponentStatus, DataUnit, Time, encode_description
from gateway.adapters.modbus_map import load_map
from gateway.outbox import EVENTS, TELEMETRY, Outbox
from gateway.sdnotify import Notifier
from gateway.supervise import Progress

A = bytes.fromhex("0102030405a6")
T0 = Time(5, 4, 10, 28, 11, 26)
ELEV = "jx-nh-0001-elev-mb"


def gbt_config() -> Gbt26875Config:
    return Gbt26875Config.model_validate(
        {"host": "127.0.0.1", "port": 0, "uitds": [{"source_address": A.hex(), "device": "p"}]}
    )


def records(path: Path) -> list[dict[str, Any]]:
    ob = Outbox(path)
    try:
        rows = ob.read(EVENTS, 0, 100_000) + ob.read(TELEMETRY, 0, 100_000)
    finally:
        ob.close()
    return [json.loads(body) for _seq, _boot, body in rows]


def fire(addr: int) -> DataUnit:
    return DataUnit(2, (ComponentStatus(1, 1, 40, addr, 0b11, encode_description("烟感"), T0),))


def wait_for(check: Any, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def once(fn: Any, when: Any = lambda *a, **k: True) -> Any:
    """``fn``, except that its first call matching ``when`` raises (a function, so that it
    also works as a method)."""
    fired: list[bool] = []

    def wrapper(*args: Any, **kw: Any) -> Any:
        if not fired and when(*args, **kw):
            fired.append(True)
            raise RuntimeError("injected")
        return fn(*args, **kw)

    return wrapper


def fires(path: Path) -> list[int]:
    return sorted(r["x"]["component_addr"] for r in records(path) if r.get("e") == "fire")


@pytest.mark.parametrize("where", ["store", "confirm", "accept", "connection"])
def test_an_exception_in_each_uitd_thread_is_counted_and_nothing_confirmed_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = tmp_path / "outbox.sqlite3"
    progress = Progress(60.0, ())
    label = {
        "store": "adapters",
        "confirm": "adapters",
        "accept": "gbt_accept",
        "connection": "gbt_connection",
    }[where]
    with running_adapters(path, gbt=gbt_config(), progress=progress) as ad:
        assert ad.server is not None and ad.gbt_port
        c = UitdClient("127.0.0.1", ad.gbt_port, A, confirm_timeout_s=1)
        assert c.report(fire(1)) is True
        if where == "store":
            monkeypatch.setattr(ad.sink.outbox, "append", once(ad.sink.outbox.append))
        elif where == "confirm":
            monkeypatch.setattr(
                gbt_server, "reply", once(gbt_server.reply, lambda _f, cmd, *_a: cmd == 3)
            )
        elif where == "accept":
            monkeypatch.setattr(ad.server, "_adopt", once(ad.server._adopt))
            c.close()  # the next report connects again: its connection meets the bug
        else:
            monkeypatch.setattr(
                gbt_server._Connection, "_handle", once(gbt_server._Connection._handle)
            )
        # The UITD's next frames: each confirmed (after a resend or a reconnection where the
        # bug ended its connection), each stored once.
        for addr in (2, 3, 4):
            assert c.report(fire(addr), tries=5) is True
        c.close()
        assert ad.errors == {label: 1}
        assert not progress.failed
        # The threads carry on: a second UITD connection is served as before.
        c2 = UitdClient("127.0.0.1", ad.gbt_port, A, confirm_timeout_s=5, serial=500)
        assert c2.report(fire(5)) is True
        c2.close()
    assert fires(path) == [1, 2, 3, 4, 5]


def test_too_many_sink_errors_fail_the_gateway_and_confirm_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.sqlite3"
    progress = Progress(60.0, ())
    with running_adapters(path, gbt=gbt_config(), progress=progress, max_errors=0) as ad:
        assert ad.gbt_port

        def broken(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("injected")

        monkeypatch.setattr(ad.sink.outbox, "append", broken)
        c = UitdClient("127.0.0.1", ad.gbt_port, A, confirm_timeout_s=0.5)
        got: list[bool] = []
        t = threading.Thread(target=lambda: got.append(c.report(fire(1), tries=1)))
        t.start()
        wait_for(lambda: progress.failed, "the failure")
        c.stopping.set()
        t.join(10)
        c.close()
        assert progress.failure is not None and progress.failure.part == "adapters"
        assert got == [False] and c.confirmed == 0
    assert fires(path) == []


def test_a_stuck_sink_makes_the_gateway_unhealthy_until_it_moves(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    progress = Progress(0.5, ("send",))
    release = threading.Event()
    entered = threading.Event()

    def on_stored() -> None:  # the sink's thread, after a commit: stuck until released
        entered.set()
        release.wait(30)

    with running_adapters(path, gbt=gbt_config(), progress=progress, on_stored=on_stored) as ad:
        assert ad.gbt_port
        beat = threading.Event()

        def sender() -> None:  # the rest of the gateway keeps moving
            while not beat.wait(0.05):
                progress.beat("send")

        t = threading.Thread(target=sender)
        t.start()
        try:
            c = UitdClient("127.0.0.1", ad.gbt_port, A, confirm_timeout_s=10)
            got: list[bool] = []
            r = threading.Thread(target=lambda: got.append(c.report(fire(1))))
            r.start()
            assert entered.wait(10)
            wait_for(lambda: progress.stalled() == ["adapters"], "the stall")
            assert not progress.healthy()  # Gateway pings the watchdog only while healthy
            release.set()
            wait_for(progress.healthy, "healthy again")
            r.join(10)
            c.close()
            assert got == [True]
        finally:
            beat.set()
            t.join()


def test_an_exception_in_a_modbus_poller_is_counted_and_the_alarm_still_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "outbox.sqlite3"
    sim = ModbusElevator(ELEV, {"floors": 10}, load_map("builtin:example_discrete"))
    sim.start()
    mb = ModbusConfig.model_validate(
        {
            "controllers": [
                {
                    "device": ELEV,
                    "host": "127.0.0.1",
                    "port": sim.port,
                    "map": "builtin:example_discrete",
                    "poll_s": 0.1,
                    "report_s": 1,
                    "backoff_max_s": 0.2,
                }
            ]
        }
    )
    progress = Progress(60.0, ())
    try:
        with running_adapters(path, modbus=mb, progress=progress) as ad:
            wait_for(lambda: ad.pollers[0].polls > 0, "a first poll")
            poller = ad.pollers[0]
            # The next poll that sees the alarm button raises before anything is submitted.
            alarm = lambda img, full: modbus.decode(poller.map, img).alarm  # noqa: E731
            monkeypatch.setattr(poller, "_emit", once(poller._emit, alarm))
            sim.inject("event", {"type": "alarm_button"})
            wait_for(
                lambda: any(r.get("e") == "alarm_button" for r in records(path)),
                "the alarm after the error",
            )
            assert ad.errors == {"modbus": 1}
            assert not progress.failed
    finally:
        sim.stop()


def test_a_relative_register_map_is_found_next_to_the_configuration_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    builtin = Path(modbus.__file__).parent / "maps" / "example_discrete.yaml"
    (conf / "maps").mkdir()
    (conf / "maps" / "elev.yaml").write_text(builtin.read_text(encoding="utf-8"), "utf-8")
    doc = {
        "gateway_id": "gw-1",
        "lan": {"url": "mqtt://127.0.0.1:1883"},
        "uplink": {"url": "mqtt://127.0.0.1:1884"},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "devices": [ELEV],
        "modbus": {
            "controllers": [
                {"device": ELEV, "host": "127.0.0.1", "map": "maps/elev.yaml"},
                {"device": "e2", "host": "127.0.0.1", "map": "builtin:example_discrete"},
            ]
        },
    }
    (conf / "gateway.yaml").write_text(yaml.safe_dump(doc), "utf-8")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_gateway_config(Path("../etc/gateway.yaml"))
    assert cfg.modbus is not None
    maps = [c.map for c in cfg.modbus.controllers]
    assert maps == [str((conf / "maps" / "elev.yaml").resolve()), "builtin:example_discrete"]
    with running_adapters(tmp_path / "outbox.sqlite3", modbus=cfg.modbus) as ad:  # the maps load
        assert len(ad.pollers) == 2


class CountingNotifier(Notifier):
    """systemd's side of the watchdog, counted (no NOTIFY_SOCKET in tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.pings = 0

    def watchdog(self) -> None:
        self.pings += 1


@pytest.mark.integration
def test_a_stuck_sink_stops_the_gateways_watchdog_pings(
    broker: PrivateMosquitto, lan_broker: PrivateMosquitto, tmp_path: Path
) -> None:
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": "gw-sup",
            "lan": {"url": lan_broker.url},
            "uplink": {"url": broker.url},
            "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
            "devices": ["p"],
            "clock": {"sync": "assume"},
            "supervision": {"stall_s": 1, "exit_after_s": 600},
            "gbt26875": gbt_config().model_dump(),
        }
    )
    notifier = CountingNotifier()
    gw = Gateway(cfg, notifier=notifier)
    release = threading.Event()
    woke = gw.adapters.sink.on_stored

    def stuck() -> None:
        release.wait(30)
        woke()

    stop = threading.Event()
    t = threading.Thread(target=gw.run, args=(stop,), name="gateway-under-test")
    t.start()
    try:
        wait_for(lambda: gw.uplink_ready.is_set() and gw.adapters.gbt_port, "the gateway")
        wait_for(lambda: notifier.pings > 0, "watchdog pings")
        gw.adapters.sink.on_stored = stuck
        port = gw.adapters.gbt_port
        assert port
        c = UitdClient("127.0.0.1", port, A, confirm_timeout_s=30)
        got: list[bool] = []
        r = threading.Thread(target=lambda: got.append(c.report(fire(1))))
        r.start()
        wait_for(lambda: gw.progress.stalled() == ["adapters"], "the stall")
        healthy = lambda: gw.metrics.registry.get_sample_value("anju_gateway_healthy")  # noqa: E731
        wait_for(lambda: healthy() == 0, "unhealthy")
        pings = notifier.pings
        time.sleep(1.0)  # (not a timed assertion: nothing may ping while stalled)
        assert notifier.pings == pings
        release.set()
        wait_for(lambda: notifier.pings > pings, "pings again")
        r.join(10)
        c.close()
        assert got == [True]
    finally:
        release.set()
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert fires(tmp_path / "outbox.sqlite3") == [1]
