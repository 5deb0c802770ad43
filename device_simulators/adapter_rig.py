"""The gateway's southbound adapters (``gateway.adapters.runner.Adapters``: the GB/T 26875.3
server and the Modbus pollers) on an outbox of their own, started for simulated UITDs
(``device_simulators.uitd``) and Modbus controllers (``device_simulators.modbus_elevator``) to
talk to, without the rest of a gateway. For benches and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.adapters.config import Gbt26875Config, ModbusConfig
from gateway.adapters.runner import Adapters
from gateway.clock import SystemClock
from gateway.outbox import Outbox
from gateway.supervise import Progress


@contextmanager
def running_adapters(
    outbox_path: Path,
    *,
    gbt: Gbt26875Config | None = None,
    modbus: ModbusConfig | None = None,
    boot_id: str = "boot-1",
    on_stored: Callable[[], None] = lambda: None,
    progress: Progress | None = None,
    max_errors: int = 5,
) -> Iterator[Adapters]:
    """``Adapters`` on the outbox at ``outbox_path`` (a trusted clock, a registry of their
    own), started for the block; then stopped (what they received committed and confirmed)
    and the outbox closed."""
    outbox = Outbox(outbox_path)
    try:
        ad = Adapters(
            gbt=gbt,
            modbus=modbus,
            outbox=outbox,
            boot_id=boot_id,
            clock=SystemClock("assume"),
            registry=CollectorRegistry(),
            on_stored=on_stored,
            progress=progress,
            max_errors=max_errors,
        )
        ad.start()
        try:
            yield ad
        finally:
            ad.stop()
    finally:
        outbox.close()
