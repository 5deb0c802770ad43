"""``anju bench adapters``: GB/T 26875.3 frames per second decoded, committed (outbox, fsync)
and confirmed by one gateway core, over real TCP; Modbus polls per second against the
simulator; the pure codec's decode rate. ``anju bench fuzz-gbt26875``: a long fuzz run of the
codec (mutated frame streams and random bytes; it must never raise and must never lose a clean
frame)."""

from __future__ import annotations

import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from device_simulators.adapter_rig import running_adapters
from gateway.adapters import gbt_tables as T
from gateway.adapters.config import Gbt26875Config, ModbusController
from gateway.adapters.gbt26875 import (
    ComponentAnalog,
    ComponentStatus,
    DataUnit,
    Frame,
    Rejected,
    SystemStatus,
    Time,
    decode_unit,
    deframe,
    encode_description,
    encode_frame,
    encode_unit,
)
from gateway.adapters.gbt_map import Binding, PanelState
from gateway.adapters.metrics import AdapterMetrics
from gateway.adapters.modbus import ControllerPoller
from gateway.adapters.modbus_map import load_map
from gateway.adapters.sink import Submission
from gateway.clock import SystemClock
from gateway.outbox import Outbox

T0 = Time(5, 4, 10, 28, 11, 26)


def _unit(rng: random.Random, n: int) -> DataUnit:
    k = n % 3
    if k == 0:
        text = encode_description(f"{n % 30}号楼烟感")
        return DataUnit(2, (ComponentStatus(1, 1, 40, n, 1 | (n & 2), text, T0),))
    if k == 1:
        return DataUnit(3, (ComponentAnalog(1, 1, 91, 9001, 5, rng.randrange(3000, 4000), T0),))
    return DataUnit(1, (SystemStatus(1, 1, 1 | rng.randrange(2) << 8, T0),))


def _uitd(port: int, source: bytes, frames: int, window: int, out: list[int]) -> None:
    """A pipelining UITD: up to ``window`` frames unconfirmed; counts confirms."""
    rng = random.Random(source[-1])
    s = socket.create_connection(("127.0.0.1", port))
    sent = confirmed = 0
    buf = bytearray()
    while confirmed < frames:
        batch = bytearray()
        while sent < frames and sent - confirmed < window:
            sent += 1
            data = encode_unit(_unit(rng, sent))
            batch += encode_frame(Frame(sent & 0xFFFF, T.CMD_SEND, source, bytes(6), data, T0))
        if batch:
            s.sendall(batch)
        buf += s.recv(65536)
        items, used = deframe(buf)
        del buf[:used]
        confirmed += sum(1 for f in items if isinstance(f, Frame) and f.command == T.CMD_CONFIRM)
    s.close()
    out.append(confirmed)


def gbt_frames_per_s(frames: int, uitds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        sources = [bytes.fromhex(f"0102030405{i:02x}") for i in range(uitds)]
        cfg = Gbt26875Config.model_validate(
            {
                "host": "127.0.0.1",
                "port": 0,
                "uitds": [{"source_address": s.hex(), "device": f"panel-{i}"}
                          for i, s in enumerate(sources)],
                "time_sync_s": 1e9,
            }
        )  # fmt: skip
        path = Path(tmp) / "outbox.sqlite3"
        with running_adapters(path, gbt=cfg, boot_id="bench") as ad:
            done: list[int] = []
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            threads = [
                threading.Thread(
                    target=_uitd, args=(ad.gbt_port, s, frames, 64, done), name=f"u{i}"
                )
                for i, s in enumerate(sources)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
        outbox = Outbox(path)
        stored = outbox.depth()
        outbox.close()
    total = sum(done)
    return {
        "frames_per_s": total / wall,
        "cpu_s_per_1k_frames": cpu / total * 1000,  # includes the clients in this process
        "records_stored": stored.events + stored.telemetry,
    }


def codec_frames_per_s(frames: int) -> float:
    rng = random.Random(1)
    src = bytes(6)
    stream = b"".join(
        encode_frame(Frame(n & 0xFFFF, 2, src, src, encode_unit(_unit(rng, n)), T0))
        for n in range(frames)
    )
    state = PanelState(Binding("panel"))
    t0 = time.perf_counter()
    items, _ = deframe(stream)
    for f in items:
        if isinstance(f, Frame):
            u = decode_unit(f.data)
            if not isinstance(u, Rejected):
                state.records(u, rx_ms=1_795_000_000_000, clock_trusted=True)
    return frames / (time.perf_counter() - t0)


class _CountingSink:
    def __init__(self) -> None:
        self.n = 0

    def submit(self, s: Submission) -> None:
        self.n += 1


def modbus_polls_per_s(seconds: float) -> float:
    from device_simulators.modbus_elevator import ModbusElevator

    rmap = load_map("builtin:example_status_word")
    sim = ModbusElevator("bench-elev", {"floors": 18}, rmap)
    sim.start()
    try:
        cfg = ModbusController.model_validate(
            {
                "device": "bench-elev",
                "host": "127.0.0.1",
                "port": sim.port,
                "map": "builtin:example_status_word",
                "poll_s": 1e-6,
            }
        )
        poller = ControllerPoller(
            cfg,
            rmap,
            _CountingSink(),  # type: ignore[arg-type]
            AdapterMetrics(CollectorRegistry()),
            SystemClock("assume"),
        )
        poller.start()
        time.sleep(seconds)
        n0, t0 = poller.polls, time.perf_counter()
        time.sleep(seconds)
        rate = (poller.polls - n0) / (time.perf_counter() - t0)
        poller.stop()
    finally:
        sim.stop()
    return rate


def run(quick: bool = False) -> dict[str, Any]:
    frames, uitds = (300, 2) if quick else (20_000, 4)
    gbt = gbt_frames_per_s(frames, uitds)
    return {
        "gbt26875_frames_per_s": round(gbt["frames_per_s"], 1),
        "gbt26875_cpu_s_per_1k_frames": round(gbt["cpu_s_per_1k_frames"], 4),
        "gbt26875_uitds": uitds,
        "gbt26875_records_stored": gbt["records_stored"],
        "gbt26875_codec_frames_per_s": round(codec_frames_per_s(2_000 if quick else 50_000), 1),
        "modbus_polls_per_s": round(modbus_polls_per_s(0.5 if quick else 5.0), 1),
    }


# ---- the fuzz run ------------------------------------------------------------------------------


def _mutate(rng: random.Random, b: bytearray) -> bytearray:
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(5)
        if not b:
            b += rng.randbytes(rng.randrange(1, 64))
            continue
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del b[i : i + rng.randrange(1, 40)]
        elif op == 2:
            b[i:i] = rng.choice([b"@@", b"##", b"@", rng.randbytes(rng.randrange(1, 30))])
        elif op == 3:
            b[i : i + 2] = rng.randbytes(2)  # e.g. a length
        else:
            b = b[:i]
    return b


def fuzz(seconds: float, seed: int = 0) -> dict[str, Any]:
    """Mutated frame streams and random bytes through the whole decode path. Checks: nothing
    raises; clean frames between @-free garbage all come out, in order."""
    rng = random.Random(seed)
    state = PanelState(Binding("panel"))
    src = bytes.fromhex("0102030405a6")
    reasons: dict[str, int] = {}
    it = nbytes = frames = lost = 0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        it += 1
        clean = [
            encode_frame(Frame(n, 2, src, bytes(6), encode_unit(_unit(rng, n)), T0))
            for n in range(rng.randrange(1, 6))
        ]
        if it % 2:
            junk = [bytes(x for x in rng.randbytes(rng.randrange(0, 50)) if x != 0x40)]
            stream = b"".join(j + f for j, f in zip(junk * len(clean), clean, strict=False))
            items, _ = deframe(stream)
            got = [f.serial for f in items if isinstance(f, Frame)]
            lost += len(clean) - len(got) if got != list(range(len(clean))) else 0
        else:
            stream = bytes(_mutate(rng, bytearray(b"".join(clean))))
            if it % 7 == 0:
                stream = rng.randbytes(rng.randrange(0, 2048))
            items, _ = deframe(stream)
        nbytes += len(stream)
        for item in items:
            if isinstance(item, Rejected):
                reasons[item.reason] = reasons.get(item.reason, 0) + 1
                continue
            frames += 1
            unit = decode_unit(item.data) if item.data else None
            if isinstance(unit, Rejected):
                reasons[unit.reason] = reasons.get(unit.reason, 0) + 1
            elif unit is not None:
                state.records(unit, rx_ms=1_795_000_000_000, clock_trusted=True)
    return {
        "seconds": seconds,
        "streams": it,
        "bytes": nbytes,
        "frames_decoded": frames,
        "clean_frames_lost": lost,
        "rejected": dict(sorted(reasons.items())),
    }


def run_fuzz(quick: bool = False) -> dict[str, Any]:
    minutes = float(os.environ.get("ANJU_FUZZ_MINUTES", "2"))
    return fuzz(2.0 if quick else minutes * 60)
