"""What the gateway starts for its southbound adapters: the commit sink, the GB/T 26875.3
server and the Modbus pollers, as one ``start``/``stop`` unit (``Adapters``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.adapters.config import Gbt26875Config, ModbusConfig
from gateway.adapters.gbt_server import UitdServer
from gateway.adapters.metrics import AdapterMetrics
from gateway.adapters.modbus import ControllerPoller, pollers
from gateway.adapters.sink import AdapterSink
from gateway.clock import SystemClock
from gateway.outbox import Outbox

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
    ) -> None:
        self.registry = registry
        self.metrics = AdapterMetrics(registry)
        commit_max = gbt.commit_max if gbt is not None else 500
        self.sink = AdapterSink(
            outbox, boot_id, clock, on_stored, commit_max=commit_max, on_commit=self._committed
        )
        self.server = UitdServer(gbt, self.sink, self.metrics, clock) if gbt is not None else None
        self.pollers: list[ControllerPoller] = []
        if modbus is not None and modbus.controllers:
            self.pollers = pollers(modbus.controllers, self.sink, self.metrics, clock, base=base)
        self.enabled = self.server is not None or bool(self.pollers)

    def _committed(self, _per_lane: list[int], duplicates: int) -> None:
        if duplicates:
            self.metrics.gbt_duplicates.inc(duplicates)

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
