"""A simulated elevator controller on Modbus TCP: a pymodbus server whose registers are the
simulated elevator of ``device_simulators.elevator`` as a register map describes them
(``gateway.adapters.modbus_map.encode``, the inverse of what the gateway decodes).

Every request first advances the elevator model to the wall clock, so a poll always sees the
car as it is. An ``alarm_button`` event holds the alarm input for 3 s; a ``fault`` event sets
its GB/T 24476 code until ``release``. ``inject(action, params)`` plays the model's
scenario actions (``trap``, ``release``, ``door_open_moving``, ...); ``silence()`` stops
answering (the port closes), ``resume()`` answers again.

``python -m device_simulators.modbus_elevator --port P --map builtin:example_status_word``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import threading
import time
from typing import Any

from anju.errors import AnjuError
from anju.now import now_ms
from device_simulators.base import Params
from device_simulators.elevator import Elevator
from gateway.adapters.modbus_map import Image, RegisterMap, encode, load_map

log = logging.getLogger("anju.sim.modbus")

_TABLES = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_ALARM_HOLD_MS = 3000


class ModbusElevator:
    """One controller: the model, its register image and a pymodbus server in a thread."""

    def __init__(
        self,
        device_id: str,
        params: Params,
        rmap: RegisterMap,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unit: int = 1,
        seed: int = 1,
        calls_per_hour: float = 30.0,
    ) -> None:
        self.map = rmap
        self.host = host
        self.port = port
        self.unit = unit
        self.model = Elevator(
            device_id,
            params,
            rng=random.Random(seed),
            start_ms=now_ms(),
            calls_per_hour=calls_per_hour,
        )
        self.lock = threading.Lock()
        self.alarm_until = 0
        self.faults: set[str] = set()
        self.img: Image = {}
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._up = threading.Event()
        self._refresh()

    # ---- the model -----------------------------------------------------------------------

    def _refresh(self) -> None:
        now = now_ms()
        for channel, payload in self.model.step(now):
            if channel != "event":
                continue
            if payload["type"] == "alarm_button":
                self.alarm_until = now + _ALARM_HOLD_MS
            elif payload["type"] == "fault":
                self.faults.add(str(payload["data"].get("code", "")))
        self.img = encode(
            self.map, self.model.metrics(), alarm=now < self.alarm_until, faults=self.faults
        )

    def inject(self, action: str, params: Params | None = None) -> None:
        with self.lock:
            self.model.inject(action, params or {}, now_ms())
            if action == "release":
                self.faults.clear()  # a technician resets the controller
            self._refresh()

    def metrics(self) -> dict[str, Any]:
        with self.lock:
            self._refresh()
            return dict(self.model.metrics())

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[int], _set: Any
    ) -> None:
        table = _TABLES.get(fc)
        if table is None:
            return None
        with self.lock:
            self.requests += 1
            self._refresh()
            img = self.img
        if fc in (1, 2):
            first, last = address // 16, (address + count - 1) // 16
            for r in range(first - start, last - start + 1):
                base = (start + r) * 16
                regs[r] = sum(img.get((table, base + k), 0) << k for k in range(16))
        else:
            for i in range(address - start, address - start + count):
                regs[i] = img.get((table, start + i), 0)
        return None

    # ---- the server ----------------------------------------------------------------------

    def start(self) -> None:
        """Serve (in a thread of its own) until ``stop``; ``port`` is set once it listens."""
        self._up.clear()
        self._thread = threading.Thread(target=self._serve, name="modbus-elevator", daemon=True)
        self._thread.start()
        if not self._up.wait(10):
            raise AnjuError("the Modbus elevator simulator did not start")

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        size = 1 + max((a for (_t, a) in self.img), default=0)
        bits = [SimData(0, count=size // 16 + 1, values=0, datatype=DataType.BITS)]
        regs = [SimData(0, count=size + 1, values=0, datatype=DataType.REGISTERS)]
        dev = SimDevice(self.unit, simdata=(bits, bits, regs, regs), action=self._action)
        if self.port == 0:
            from anju.servers import free_port

            self.port = free_port()
        self._loop = asyncio.get_running_loop()
        self._server = ModbusTcpServer(dev, address=(self.host, self.port))
        task = asyncio.create_task(self._server.serve_forever(), name="modbus-serve")
        for _ in range(500):  # up to 10 s for the socket to listen
            if self._server.is_active():
                break
            await asyncio.sleep(0.02)
        self._up.set()
        await task

    def stop(self) -> None:
        if self._loop is not None and self._server is not None and self._thread is not None:
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            fut.result(10)
            self._thread.join(10)
        self._loop = self._server = self._thread = None

    def silence(self) -> None:
        """Stop answering (the controller's Modbus card died): the port closes."""
        self.stop()

    def resume(self) -> None:
        self.start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m device_simulators.modbus_elevator", description=__doc__
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--map", default="builtin:example_status_word")
    p.add_argument("--device", default="modbus-elevator")
    p.add_argument("--floors", type=int, default=18)
    p.add_argument("--unit", type=int, default=1)
    p.add_argument(
        "--trap-at", type=float, default=None, help="trap passengers between floors after S s"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        rmap = load_map(args.map)
        sim = ModbusElevator(
            args.device, {"floors": args.floors}, rmap, host=args.host, port=args.port,
            unit=args.unit,
        )  # fmt: skip
        sim.start()
    except AnjuError as exc:
        print(f"modbus_elevator: {exc}", file=sys.stderr)
        return 2
    from anju.cli import stop_on_signals

    stop = stop_on_signals()
    log.info("Modbus elevator %s on %s:%d (%s)", args.device, args.host, sim.port, rmap.name)
    started = time.monotonic()
    trapped = False
    while not stop.wait(0.5):
        if args.trap_at is not None and not trapped and time.monotonic() - started >= args.trap_at:
            sim.inject("trap", {"between_floors": True})
            trapped = True
    sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
