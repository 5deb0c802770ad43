"""The GB/T 26875.3 server over real TCP into a real outbox (SQLite): confirm after commit,
repeats stored once (also across a restart between commit and confirm), denials, time sync, and
one UITD's garbage and floods not disturbing another."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from device_simulators.adapter_rig import running_adapters
from device_simulators.uitd import UitdClient
from gateway.adapters import gbt_tables as T
from gateway.adapters.config import Gbt26875Config
from gateway.adapters.gbt26875 import (
    ComponentStatus,
    DataUnit,
    Frame,
    Time,
    deframe,
    encode_description,
    encode_frame,
    encode_unit,
)
from gateway.adapters.runner import Adapters
from gateway.outbox import EVENTS, TELEMETRY, Outbox

A = bytes.fromhex("0102030405a6")
B = bytes.fromhex("0102030405b7")
T0 = Time(5, 4, 10, 28, 11, 26)


def config(**extra: Any) -> Gbt26875Config:
    return Gbt26875Config.model_validate(
        {
            "host": "127.0.0.1",
            "port": 0,
            "uitds": [
                {"source_address": A.hex(), "device": "panel-a"},
                {"source_address": B.hex(), "device": "panel-b"},
            ],
            **extra,
        }
    )


def records(path: Path) -> list[dict[str, Any]]:
    ob = Outbox(path)
    try:
        rows = ob.read(EVENTS, 0, 100_000) + ob.read(TELEMETRY, 0, 100_000)
    finally:
        ob.close()
    return [json.loads(body) for _seq, _boot, body in rows]


def fire(addr: int) -> DataUnit:
    obj = ComponentStatus(1, 1, 40, addr, 0b11, encode_description("烟感"), T0)
    return DataUnit(2, (obj,))


def metric(ad: Adapters, name: str, **labels: str) -> float:
    v = ad.registry.get_sample_value(name, labels)
    return 0.0 if v is None else float(v)


def wait_for(check: Any, what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_confirmed_only_after_commit_and_repeats_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with running_adapters(path, gbt=config()) as ad:
        assert ad.gbt_port
        c = UitdClient("127.0.0.1", ad.gbt_port, A, confirm_timeout_s=10)
        assert c.report(fire(3012)) is True
        # The confirm came after the commit: the record is on disk now.
        got = records(path)
        assert [(r["d"], r["e"], r["x"]["component_addr"]) for r in got] == [
            ("panel-a", "fire", 3012)
        ]
        assert c.report(None) is True  # a heartbeat: a status record
        # The same frame again (the UITD missed our confirm): confirmed, not stored again.
        raw = encode_frame(Frame(77, T.CMD_SEND, A, bytes(6), encode_unit(fire(3008)), T0))
        for _ in range(3):
            assert c.sock is not None
            c.sock.sendall(raw)
        confirms: list[Frame] = []
        wait_for(
            lambda: (
                len([f for f in confirms if f.serial == 77 and f.command == 3]) == 3
                or bool(confirms.extend(c.poll()))
            ),
            "three confirms",
        )
        c.close()
        dups = metric(ad, "anju_gateway_gbt26875_duplicates_total")
    got = records(path)
    assert sum(1 for r in got if r.get("e") == "fire") == 2
    assert sum(1 for r in got if r["k"] == "s") == 1
    assert dups == 2


def test_restart_between_commit_and_confirm_stores_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    raw = encode_frame(Frame(5, T.CMD_SEND, A, bytes(6), encode_unit(fire(3012)), T0))
    with running_adapters(path, gbt=config()) as ad:
        s = socket.create_connection(("127.0.0.1", ad.gbt_port))
        s.sendall(raw)
        wait_for(lambda: len(records(path)) == 1, "the commit")
        s.close()  # the UITD never read the confirm (as if the gateway died before sending)
    with running_adapters(path, gbt=config()) as ad:  # the gateway again, on the same outbox
        c = UitdClient("127.0.0.1", ad.gbt_port or 0, A)
        c.connect()
        assert c.sock is not None
        c.sock.sendall(raw)  # the UITD resends the same frame
        wait_for(lambda: any(f.command == 3 for f in c.poll()), "the confirm")
        c.close()
    assert len(records(path)) == 1


def test_bad_checksum_unknown_uitd_and_bad_units_are_denied(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with running_adapters(path, gbt=config()) as ad:
        s = socket.create_connection(("127.0.0.1", ad.gbt_port))
        s.settimeout(5)
        good = encode_frame(Frame(1, T.CMD_SEND, A, bytes(6), encode_unit(fire(1)), T0))
        bad_sum = bytearray(encode_frame(Frame(2, T.CMD_SEND, A, bytes(6), b"", T0)))
        bad_sum[-3] ^= 0x55
        unknown = encode_frame(Frame(3, T.CMD_SEND, bytes(6), bytes(6), b"", T0))
        bad_unit = encode_frame(Frame(4, T.CMD_SEND, A, bytes(6), b"\x09\x01\x00", T0))
        s.sendall(b"\x00garbage" + bytes(bad_sum) + unknown + bad_unit + good)
        answers: list[Frame] = []
        buf = bytearray()
        while len(answers) < 4:
            buf += s.recv(4096)
            items, used = deframe(buf)
            del buf[:used]
            answers += [f for f in items if isinstance(f, Frame) and f.command != T.CMD_CONTROL]
        s.close()
        assert [(f.serial, f.command) for f in answers] == [(2, 6), (3, 6), (4, 6), (1, 3)]
        reg = ad.metrics.gbt_rejected
        reasons = {s.labels["reason"] for m in reg.collect() for s in m.samples if s.value}
    assert {"garbage", "bad_checksum", "unknown_uitd", "unknown_unit"} <= reasons
    assert len(records(path)) == 1


def test_time_sync_once_the_clock_is_trusted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with running_adapters(path, gbt=config()) as ad:
        c = UitdClient("127.0.0.1", ad.gbt_port or 0, A)
        assert c.report(None)
        wait_for(lambda: bool(c.poll()) or c.time_syncs > 0, "a time sync")
        assert c.time_syncs == 1
        c.close()


def test_a_flooding_and_garbling_uitd_does_not_disturb_another(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    stop = threading.Event()
    sent = [0]

    def flood(port: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        serial = 0
        try:
            while not stop.is_set():
                chunk = bytearray()
                for _ in range(200):
                    serial = (serial + 1) & 0xFFFF
                    f = encode_frame(Frame(serial, 2, A, bytes(6), encode_unit(fire(serial)), T0))
                    chunk += b"\xffjunk@" + f[: len(f) // 2] + f  # garbage, half a frame, a frame
                s.sendall(chunk)  # never reads its confirms
                sent[0] += 200
        except OSError:
            pass  # disconnected for not reading: fine
        finally:
            s.close()

    with running_adapters(path, gbt=config()) as ad:
        port = ad.gbt_port or 0
        flooder = threading.Thread(target=flood, args=(port,), name="flooder")
        flooder.start()
        wait_for(lambda: sent[0] >= 2000, "the flood to start")
        c = UitdClient("127.0.0.1", port, B, confirm_timeout_s=10)
        for addr in range(50):
            assert c.report(fire(addr)) is True
        c.close()
        stop.set()
        flooder.join(10)
    got = [r for r in records(path) if r["d"] == "panel-b" and r.get("e") == "fire"]
    assert sorted(r["x"]["component_addr"] for r in got) == list(range(50))


def test_the_benchmarks_run() -> None:
    from anju import bench

    figures = bench.load("adapters")(quick=True)
    assert figures["gbt26875_frames_per_s"] > 0 and figures["modbus_polls_per_s"] > 0
    fuzz = bench.load("fuzz-gbt26875")(quick=True)
    assert fuzz["frames_decoded"] > 0 and fuzz["clean_frames_lost"] == 0
