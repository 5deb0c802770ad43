"""A simulated GB/T 26875.3 user information transmission device (UITD): a TCP client that
reports a fire alarm panel's components to its monitoring centre (an anju gateway).

It speaks the frames of ``gateway.adapters.gbt26875``: each report is a ``send`` (command 2)
with one data unit, sent again after ``confirm_timeout_s`` without a confirm (up to 3 times,
then the link is dropped and made again, and the report resent: the gateway recognises the
repeat by its serial number); an empty ``send`` every ``heartbeat_s``; a time sync (command 1)
is confirmed. Scenario files (``anju/data/uitd_scenarios.yaml`` holds the shipped ones)::

    name: fire_building_3
    steps:
      - {at: 5, action: fire, component_addr: 3012, component_type: 40, text: "3号楼12层烟感"}
      - {at: 8, action: start, component_addr: 5001, component_type: 111}
      - {at: 10, action: feedback, component_addr: 5001, component_type: 111}
      - {at: 12, action: analog, component_addr: 9001, component_type: 91, analog_type: 5,
         value: 420}
      - {at: 30, action: reset}
      - {at: 40, action: drop_link, for_s: 300}

Component actions (``fire``, ``fault``, ``disabled``, ``supervisory``, ``start``, ``feedback``,
``power_fault``) set that status bit of the component (``system_addr``, default 1;
``component_type``; ``component_addr``; ``text``) and report its status word (unit 2);
``normal`` clears its bits. ``system_power_fault`` (``power``: main, backup, bus) reports the
system status (unit 1). ``reset`` reports a reset operation (unit 4) and clears every bit.
``analog`` reports a value (unit 3), and again with every heartbeat. ``drop_link`` closes the
connection and stays silent for
``for_s`` seconds.

``python -m device_simulators.uitd --connect tcp://HOST:PORT --source HEX12 --scenario NAME
[--time-scale X]``: ``--time-scale`` plays the steps X times sooner (as ``anju simulate``'s
scenarios; ``anju demo`` passes its own); the UITD's clock, its heartbeats and a dropped link's
``for_s`` stay in real time (the gateway times them).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from anju.errors import AnjuError, ConfigError
from anju.now import now_ms
from anju.yamlfile import load_model
from gateway.adapters import gbt_tables as T
from gateway.adapters.gbt26875 import (
    ComponentAnalog,
    ComponentStatus,
    DataUnit,
    Frame,
    SystemOperation,
    SystemStatus,
    Time,
    deframe,
    encode_description,
    encode_frame,
    encode_unit,
    reply,
)

log = logging.getLogger("anju.sim.uitd")

SCENARIOS = Path(__file__).resolve().parent.parent / "anju" / "data" / "uitd_scenarios.yaml"
_BIT = {v.partition(":")[0]: k for k, v in T.COMPONENT_STATUS_BITS.items()}
_SYS_POWER = {"main": 8, "backup": 9, "bus": 10}
Action = Literal[
    "fire", "fault", "disabled", "supervisory", "start", "feedback", "power_fault", "normal",
    "system_power_fault", "reset", "analog", "drop_link",
]  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Strict):
    at: float = Field(ge=0, description="seconds after the start")
    action: Action
    system_type: int = Field(1, ge=0, le=255)
    system_addr: int = Field(1, ge=0, le=255)
    component_type: int = Field(40, ge=0, le=255)
    component_addr: int = Field(1, ge=0, le=0xFFFFFFFF)
    text: str = ""
    power: Literal["main", "backup", "bus"] = "main"
    analog_type: int = Field(5, ge=0, le=255)
    value: int = Field(0, ge=-32768, le=32767)
    for_s: float = Field(0, ge=0)


class UitdScenario(_Strict):
    name: str
    description: str = ""
    steps: list[Step]


class UitdScenarios(_Strict):
    scenarios: list[UitdScenario]


def load_uitd_scenario(spec: str) -> UitdScenario:
    """A scenario by name (from the shipped file) or from a file of its own."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return load_model(path, UitdScenario)
    shipped = load_model(SCENARIOS, UitdScenarios)
    for s in shipped.scenarios:
        if s.name == spec:
            return s
    raise ConfigError(f"no UITD scenario {spec!r}; shipped: {[s.name for s in shipped.scenarios]}")


class UitdClient:
    """One UITD's link to its centre. ``report(unit)`` returns once the centre confirmed it."""

    def __init__(
        self,
        host: str,
        port: int,
        source: bytes,
        *,
        dest: bytes = bytes(6),
        utc_offset_min: int = 480,
        confirm_timeout_s: float = 10.0,
        serial: int = 0,
    ) -> None:
        self.host, self.port = host, port
        self.source, self.dest = source, dest
        self.utc_offset_min = utc_offset_min
        self.confirm_timeout_s = confirm_timeout_s
        self.serial = serial
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.confirmed = 0
        self.denied = 0
        self.time_syncs = 0
        self.resent = 0
        self.stopping = threading.Event()

    def now(self) -> Time:
        return Time.from_epoch_ms(now_ms(), self.utc_offset_min)

    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=5)
        self.sock.settimeout(0.2)
        self.buf.clear()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def frame(self, data: bytes = b"") -> Frame:
        self.serial = (self.serial + 1) & 0xFFFF
        return Frame(self.serial, T.CMD_SEND, self.source, self.dest, data, self.now())

    def report(self, unit: DataUnit | None, *, tries: int = 3) -> bool:
        """Send a unit (None: a heartbeat) and wait for its confirm; resend on timeout, then
        reconnect and resend. True when confirmed, False when denied."""
        f = self.frame(b"" if unit is None else encode_unit(unit))
        raw = encode_frame(f)
        while not self.stopping.is_set():
            for attempt in range(tries):
                try:
                    if self.sock is None:
                        self.connect()
                    assert self.sock is not None
                    self.sock.sendall(raw)
                    if attempt:
                        self.resent += 1
                    answer = self._await(f.serial)
                except OSError as exc:
                    log.info("UITD %s: link lost (%s)", self.source.hex(), exc)
                    self.close()
                    time.sleep(0.5)
                    continue
                if answer is not None:
                    return answer
            self.close()
        return False

    def _await(self, serial: int) -> bool | None:
        deadline = time.monotonic() + self.confirm_timeout_s
        while time.monotonic() < deadline:
            for f in self.poll():
                if f.serial == serial and f.command in (T.CMD_CONFIRM, T.CMD_DENY):
                    if f.command == T.CMD_CONFIRM:
                        self.confirmed += 1
                        return True
                    self.denied += 1
                    return False
        return None

    def poll(self) -> list[Frame]:
        """Read what the centre sent (answering its time syncs); the frames read."""
        assert self.sock is not None
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not chunk:
            raise ConnectionResetError("closed by the centre")
        self.buf += chunk
        items, used = deframe(self.buf)
        del self.buf[:used]
        out = [f for f in items if isinstance(f, Frame)]
        for f in out:
            if f.command == T.CMD_CONTROL:
                self.time_syncs += 1
                self.sock.sendall(reply(f, T.CMD_CONFIRM, self.source, self.now()))
        return out


class Uitd:
    """A UITD with its panel's component states, playing a scenario."""

    def __init__(self, client: UitdClient, *, heartbeat_s: float = 30.0) -> None:
        self.c = client
        self.heartbeat_s = heartbeat_s
        self.status: dict[tuple[int, int, int, int], int] = {}
        self.system: dict[tuple[int, int], int] = {}
        self.analog: dict[tuple[int, int, int, int, int], Step] = {}  # sent again each heartbeat

    def apply(self, s: Step) -> None:
        now = self.c.now()
        if s.action == "drop_link":
            self.c.close()
            return
        if s.action == "analog":
            akey = (s.system_type, s.system_addr, s.component_type, s.component_addr, s.analog_type)
            self.analog[akey] = s
            obj = ComponentAnalog(
                s.system_type, s.system_addr, s.component_type, s.component_addr,
                s.analog_type, s.value, now,
            )  # fmt: skip
            self.c.report(DataUnit(3, (obj,)))
            return
        if s.action == "reset":
            self.status.clear()
            self.system.clear()
            self.c.report(DataUnit(4, (SystemOperation(s.system_type, s.system_addr, 1, 0, now),)))
            return
        if s.action == "system_power_fault":
            key = (s.system_type, s.system_addr)
            word = self.system.get(key, 1) | 1 << _SYS_POWER[s.power]
            self.system[key] = word
            self.c.report(DataUnit(1, (SystemStatus(s.system_type, s.system_addr, word, now),)))
            return
        key4 = (s.system_type, s.system_addr, s.component_type, s.component_addr)
        word = 1 if s.action == "normal" else self.status.get(key4, 1) | 1 << _BIT[s.action]
        self.status[key4] = word
        obj2 = ComponentStatus(
            s.system_type, s.system_addr, s.component_type, s.component_addr, word,
            encode_description(s.text), now,
        )  # fmt: skip
        self.c.report(DataUnit(2, (obj2,)))

    def run(
        self,
        scenario: UitdScenario,
        stop: threading.Event,
        *,
        loop: bool = False,
        time_scale: float = 1.0,
    ) -> None:
        """Play the scenario (``at`` in seconds from now, divided by ``time_scale``),
        heartbeats in between; then keep sending heartbeats until ``stop``."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive ({time_scale})")
        self.c.stopping = stop
        start = time.monotonic()
        steps = sorted(scenario.steps, key=lambda s: s.at)
        next_beat = start
        silent_until = 0.0
        while not stop.is_set():
            now = time.monotonic()
            while steps and (now - start) * time_scale >= steps[0].at:
                step = steps.pop(0)
                log.info("UITD %s: %s", self.c.source.hex(), step.action)
                if step.action == "drop_link":
                    silent_until = now + step.for_s
                self.apply(step)
            if not steps and loop:
                steps = sorted(scenario.steps, key=lambda s: s.at)
                start = now
            if now >= silent_until and now >= next_beat:
                next_beat = now + self.heartbeat_s
                self.c.report(None)
                for a in list(self.analog.values()):
                    self.apply(a)
            if self.c.sock is not None:
                try:
                    self.c.poll()
                except OSError:
                    self.c.close()
            else:
                stop.wait(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m device_simulators.uitd", description=__doc__)
    p.add_argument("--connect", required=True, help="tcp://HOST:PORT of the gateway")
    p.add_argument("--source", required=True, help="the UITD's address, 12 hex digits")
    p.add_argument("--scenario", default="quiet", help="a shipped scenario name or a YAML file")
    p.add_argument("--heartbeat-s", type=float, default=30.0)
    p.add_argument("--utc-offset-min", type=int, default=480)
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="play the scenario's steps X times sooner"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        host, _, port = args.connect.removeprefix("tcp://").rpartition(":")
        source = bytes.fromhex(args.source)
        if len(source) != 6:
            raise ValueError("--source is 12 hex digits")
        if args.time_scale <= 0:
            raise ValueError(f"--time-scale must be positive ({args.time_scale:g})")
        scenario = load_uitd_scenario(args.scenario)
        client = UitdClient(host, int(port), source, utc_offset_min=args.utc_offset_min)
    except (ValueError, AnjuError) as exc:
        print(f"uitd: {exc}", file=sys.stderr)
        return 2
    from anju.cli import stop_on_signals

    stop = stop_on_signals()
    Uitd(client, heartbeat_s=args.heartbeat_s).run(scenario, stop, time_scale=args.time_scale)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
