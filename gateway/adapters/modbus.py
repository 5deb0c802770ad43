"""Modbus TCP elevator controllers: one polling thread per controller (pymodbus, the ``modbus``
extra, imported only when a controller is configured).

Each poll reads the map's plan (``modbus_map.plan``), decodes it and sends:

- the metrics that changed, at once; all of them every ``report_s`` (the device's reporting
  interval: the backend's ``device.offline`` counts on it);
- ``alarm_button`` on a rising edge, ``fault`` (``data.code``) when a fault code appears.

A poll that fails (no connection, timeout, a Modbus exception) is retried after a back-off that
doubles up to ``backoff_max_s``; after ``offline_after`` failures the controller counts as down
(metric, log) and nothing is sent for it, so the backend raises ``device.offline`` after three
reporting intervals of silence, as for any device. The first good poll after that sends every
value again.

Supervision (``gateway.supervise``): an unexpected exception in a poller (a bug in decoding, in
pymodbus) is logged and counted (``anju_gateway_thread_errors_total{thread="modbus"}``), the
connection closed and the controller polled again after the back-off; beyond
``supervision.max_errors`` a minute (all pollers together) the gateway fails (exit 2).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anju.errors import ConfigError
from anju.uplink import Kind, record_body
from gateway.adapters.config import ModbusController
from gateway.adapters.metrics import AdapterMetrics
from gateway.adapters.modbus_map import Image, RegisterMap, decode, load_map, plan
from gateway.adapters.sink import AdapterSink, Submission
from gateway.clock import SystemClock
from gateway.outbox import EVENTS, TELEMETRY
from gateway.supervise import Restarts

log = logging.getLogger("anju.gateway.modbus")


class PollError(Exception):
    """A poll that did not return the registers."""


def _pymodbus() -> Any:
    try:
        from pymodbus.client import ModbusTcpClient
    except ImportError as exc:
        raise ConfigError(
            "the gateway configuration names Modbus controllers, but pymodbus is not "
            "installed: pip install 'anju[modbus]'"
        ) from exc
    return ModbusTcpClient


def read_image(client: Any, reads: list[tuple[str, int, int]], unit: int) -> Image:
    """Read every range of the plan; PollError for anything short of a full answer."""
    img: Image = {}
    for table, start, count in reads:
        fn = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[table]
        try:
            rr = fn(start, count=count, device_id=unit)
        except Exception as exc:  # a boundary: pymodbus raises its own and OSError kinds
            raise PollError(f"{table} {start}+{count}: {exc}") from exc
        if rr.isError():
            raise PollError(f"{table} {start}+{count}: {rr}")
        values = rr.registers if table in ("holding", "input") else rr.bits
        if len(values) < count:
            raise PollError(f"{table} {start}+{count}: short answer ({len(values)})")
        for i in range(count):
            img[(table, start + i)] = int(values[i])
    return img


class ControllerPoller:
    """Polls one controller in a thread of its own; ``start``/``stop``."""

    def __init__(
        self,
        cfg: ModbusController,
        rmap: RegisterMap,
        sink: AdapterSink,
        metrics: AdapterMetrics,
        clock: SystemClock,
        *,
        client_factory: Callable[..., Any] | None = None,
        restarts: Restarts | None = None,
    ) -> None:
        self.cfg = cfg
        self.restarts = restarts
        self.map = rmap
        self.reads = plan(rmap)
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self._factory = client_factory or _pymodbus()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"gw-modbus-{cfg.device}", daemon=True
        )
        self.last: dict[str, Any] = {}
        self.faults: set[str] = set()
        self.alarm = False
        self.failures = 0
        self.polls = 0
        self.up = False
        self.last_poll_ms: int | None = None  # the last poll answered
        self.last_error: str | None = None  # why the last poll failed

    def state(self) -> dict[str, Any]:
        """For ``anju gateway status``: ``answering``, ``backing off`` (polls fail, fewer than
        ``offline_after`` so far), ``not answering`` (offline; still polled, backing off) or
        ``connecting`` (no poll yet)."""
        if self.failures == 0:
            st = "answering" if self.polls else "connecting"
        elif self.failures < self.cfg.offline_after:
            st = "backing off"
        else:
            st = "not answering"
        return {
            "device": self.cfg.device,
            "address": f"{self.cfg.host}:{self.cfg.port}",
            "state": st,
            "polls": self.polls,
            "failures": self.failures,
            "last_poll_ms": self.last_poll_ms,
            "last_error": self.last_error if self.failures else None,
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        c = self.cfg
        client = self._factory(
            c.host, port=c.port, timeout=c.timeout_s, retries=0, reconnect_delay=0
        )
        next_report = 0.0
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    if not client.connected and not client.connect():
                        raise PollError(f"cannot connect to {c.host}:{c.port}")
                    img = read_image(client, self.reads, c.unit)
                    next_report = self._took(img, t0, next_report)
                except PollError as exc:
                    client.close()
                    self._failed(str(exc))
                    self._backoff()
                    continue
                except Exception as exc:  # a bug: counted; the controller polled again
                    client.close()
                    if self.restarts is not None and not self.restarts.allow(exc):
                        return
                    if self.restarts is None:
                        log.exception("controller %s: unexpected error", c.device)
                    self._failed(f"{type(exc).__name__}: {exc}")
                    next_report = 0.0  # everything again on the next good poll
                    self._backoff()
                    continue
                self._stop.wait(max(0.0, c.poll_s - (time.monotonic() - t0)))
        finally:
            client.close()

    def _took(self, img: Image, t0: float, next_report: float) -> float:
        """A good poll: say so, send what changed (all every ``report_s``); the next report."""
        c = self.cfg
        self.polls += 1
        self.last_poll_ms = self.clock.wall_ms()
        self.metrics.modbus_polls.labels("ok").inc()
        if not self.up:
            self.up = True
            self.metrics.modbus_up.labels(c.device).set(1)
            log.info("controller %s answers", c.device)
            next_report = 0.0
        self.failures = 0
        full = t0 >= next_report
        if full:
            next_report = t0 + c.report_s
        self._emit(img, full=full)
        return next_report

    def _backoff(self) -> None:
        c = self.cfg
        delay = min(c.backoff_max_s, c.poll_s * 2 ** min(self.failures, 16))
        self._stop.wait(random.uniform(0.5, 1.0) * delay)

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why
        self.metrics.modbus_polls.labels("failed").inc()
        if self.failures == self.cfg.offline_after:
            log.warning("controller %s does not answer (%s)", self.cfg.device, why)
            self.up = False
            self.last = {}
            self.metrics.modbus_up.labels(self.cfg.device).set(0)

    def _emit(self, img: Image, *, full: bool) -> None:
        """Submit what changed; the state (last values, edges) moves on only once submitted,
        so that an exception on the way loses no edge."""
        r = decode(self.map, img)
        rx = self.clock.wall_ms()
        items: list[tuple[int, str]] = []
        changed = {k: v for k, v in r.metrics.items() if self.last.get(k, _MISSING) != v}
        send = r.metrics if full else changed
        if send:
            items.append(self._rec("t", rx, {"m": dict(send)}))
        if r.alarm and not self.alarm:
            items.append(self._rec("e", rx, {"e": "alarm_button", "x": {}}))
        for code in sorted(r.faults - self.faults):
            items.append(self._rec("e", rx, {"e": "fault", "x": {"code": code}}))
        if items:
            self.sink.submit(Submission(items, _noop))
        self.last = dict(r.metrics)
        self.alarm = r.alarm
        self.faults = r.faults

    def _rec(self, kind: Kind, rx: int, payload: dict[str, Any]) -> tuple[int, str]:
        body = record_body(
            device_id=self.cfg.device, kind=kind, ts=rx, rx=rx, gateway_timed=True, payload=payload
        )
        return (TELEMETRY if kind == "t" else EVENTS), body


_MISSING = object()


def _noop() -> None:
    return None


def pollers(
    controllers: list[ModbusController],
    sink: AdapterSink,
    metrics: AdapterMetrics,
    clock: SystemClock,
    *,
    base: Path | None = None,
    restarts: Restarts | None = None,
) -> list[ControllerPoller]:
    """One poller per controller; every map is loaded (and refused with file:line) first."""
    maps = {c.map: load_map(c.map, base=base) for c in controllers}
    return [
        ControllerPoller(c, maps[c.map], sink, metrics, clock, restarts=restarts)
        for c in controllers
    ]
