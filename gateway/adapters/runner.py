"""What the gateway starts for its southbound adapters: the commit sink, the GB/T 26875.3
server and the Modbus pollers, as one ``start``/``stop`` unit (``Adapters``).

Their threads are supervised with the gateway's own (``gateway.supervise``): the sink
(``adapters``) and the UITD accept loop (``gbt_accept``) are parts with the gateway's progress
deadline, exceptions are counted per thread through ``count_error`` (the gateway's
``anju_gateway_thread_errors_total{thread}``; ``errors`` here too) and limited by
``max_errors`` a minute per thread."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.adapters.config import Gbt26875Config, ModbusConfig
from gateway.adapters.gbt_server import UitdServer
from gateway.adapters.metrics import AdapterMetrics
from gateway.adapters.modbus import ControllerPoller, pollers
from gateway.adapters.sink import AdapterSink
from gateway.clock import SystemClock
from gateway.outbox import Outbox
from gateway.supervise import Progress, Restarts

log = logging.getLogger("anju.gateway.adapters")


class Adapters:
    """Built (register maps loaded, so a bad map stops the gateway at start) in the gateway's
    constructor; ``start`` opens the server and the pollers, ``stop`` stops them and commits
    and confirms what was received."""

    def __init__(
        self,
        *,
        gbt: Gbt26875Config | None,
        modbus: ModbusConfig | None,
        outbox: Outbox,
        boot_id: str,
        clock: SystemClock,
        registry: CollectorRegistry,
        on_stored: Callable[[], None],
        base: Path | None = None,
        progress: Progress | None = None,
        count_error: Callable[[str], object] | None = None,
        max_errors: int = 5,
    ) -> None:
        self.registry = registry
        self.metrics = AdapterMetrics(registry)
        self.progress = progress or Progress(60.0, ())
        self.errors: dict[str, int] = {}
        self._count_error = count_error
        commit_max = gbt.commit_max if gbt is not None else 500
        enabled = gbt is not None or (modbus is not None and bool(modbus.controllers))
        self.sink = AdapterSink(
            outbox,
            boot_id,
            clock,
            on_stored,
            commit_max=commit_max,
            on_commit=self._committed,
            progress=self.progress if enabled else Progress(60.0, ()),
            on_error=lambda: self.count("adapters"),
            max_errors=max_errors,
        )
        self.server = (
            UitdServer(
                gbt,
                self.sink,
                self.metrics,
                clock,
                progress=self.progress,
                count_error=self.count,
                max_errors=max_errors,
            )
            if gbt is not None
            else None
        )
        self.pollers: list[ControllerPoller] = []
        if modbus is not None and modbus.controllers:
            restarts = Restarts(
                "modbus", self.progress, lambda: self.count("modbus"), max_errors=max_errors
            )
            self.pollers = pollers(
                modbus.controllers, self.sink, self.metrics, clock, base=base, restarts=restarts
            )
        self.enabled = self.server is not None or bool(self.pollers)

    def count(self, thread: str) -> None:
        """One exception in an adapter thread (logged where it happened)."""
        self.errors[thread] = self.errors.get(thread, 0) + 1
        if self._count_error is not None:
            self._count_error(thread)

    def _committed(self, _per_lane: list[int], duplicates: int) -> None:
        if duplicates:
            self.metrics.gbt_duplicates.inc(duplicates)

    def state(self) -> dict[str, Any]:
        """The adapters for ``anju gateway status``: the UITD server and each controller."""
        return {
            "gbt26875": None if self.server is None else self.server.state(),
            "modbus": [p.state() for p in self.pollers],
        }

    @property
    def gbt_port(self) -> int | None:
        return None if self.server is None else self.server.port

    def start(self) -> None:
        if not self.enabled:
            return
        self.sink.start()
        if self.server is not None:
            self.server.start()
        for p in self.pollers:
            p.start()

    def stop(self) -> None:
        if not self.enabled:
            return
        for p in self.pollers:
            p.stop()
        if self.server is not None:
            self.server.stop()
        self.sink.stop()
