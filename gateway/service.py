"""The gateway service: LAN intake -> SQLite outbox -> sender -> uplink.

Threads, each owned here and stopped by ``run``'s exit: paho's network loop for the LAN client,
the committer (``gateway.intake``), the uplink's network thread (``gateway.link``), and the
sender loop, which is ``run`` itself: it applies confirmations, sends within the windows and the
pace, corrects the clock, sends heartbeats, writes the status file and pings the systemd
watchdog.

Supervision (``gateway.supervise``): each of intake, commit, send and the uplink thread marks its
progress on every turn. The watchdog is pinged, and the retained state and heartbeat say
``"online": true``, only while none is stalled (``supervision.stall_s``); when one is, the state
says ``{"online": false, "healthy": false, "stalled": [...]}`` so that the backend raises the
gateway's offline alert at once. A part that fails beyond recovery, or stays stalled for
``supervision.exit_after_s``, makes ``run`` raise ``GatewayFailure``: the process exits non-zero
and systemd (or the demo) starts it again. An exception in the sender loop is logged, counted
(``anju_gateway_thread_errors_total{thread="send"}``) and the sender starts again from the
outbox (everything unconfirmed is resent; the backend drops duplicates).

``run`` returns ``None`` when ``stop`` is set, or a ``RemoteRequest`` when a valid new
configuration arrived from the backend (``gateway.remote`` applies it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from prometheus_client import start_http_server

from anju.uplink import config_result_topic
from gateway.adapters.runner import Adapters
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.intake import LanIntake
from gateway.link import Uplink
from gateway.metrics import GatewayMetrics
from gateway.outbox import Outbox
from gateway.remote import RemoteRequest, RemoteResult, parse_remote
from gateway.sdnotify import Notifier
from gateway.sender import Sender
from gateway.status import write_status
from gateway.supervise import Progress, Restarts

log = logging.getLogger("anju.gateway")

REJECTED_VERSION_KEY = "remote_rejected_version"


class Gateway:
    """One community gateway. Call ``run(stop)``."""

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        outbox: Outbox | None = None,
        clock: SystemClock | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.boot_id = str(uuid.uuid4())
        self.metrics = GatewayMetrics()
        self.clock = clock or SystemClock(cfg.clock.sync, cfg.clock.not_before_ms())
        self.outbox = outbox or Outbox(
            cfg.outbox.path,
            max_bytes=cfg.outbox.max_bytes,
            device_events_max=cfg.outbox.device_events_max,
            device_event_bytes_max=device_event_bytes(cfg),
        )
        self.progress = Progress(cfg.supervision.stall_s)
        self.notifier = notifier or Notifier()
        self._wake = threading.Event()
        self._connected_gen = 0
        self._said_healthy: bool | None = None
        self._next_beat = 0.0
        self._next_clock = 0.0
        self._remote: RemoteRequest | None = None
        self._results: list[RemoteResult] = []
        self._results_lock = threading.Lock()
        self.sender = Sender(
            self.outbox,
            cfg.outbox,
            cfg.gateway_id,
            self.metrics,
            compress=cfg.uplink.compress,
        )
        self.link = Uplink(
            cfg,
            self.boot_id,
            self.metrics,
            on_ack=self._on_ack,
            on_config=self._on_config if cfg.remote_config.enabled else None,
            on_connected=self._wake.set,
            progress=self.progress,
        )
        self.intake = LanIntake(
            cfg,
            self.outbox,
            self.metrics,
            self.clock,
            self.boot_id,
            self._stored,
            progress=self.progress,
        )
        self.lan_ready = self.intake.ready
        self.uplink_ready = self.link.ready
        self.metrics.config_version.set(cfg.config_version)
        # Southbound adapters (GB/T 26875.3, Modbus; docs/adapters.md): built here so that a bad
        # register map stops the gateway at start; started and stopped with the intake.
        self.adapters = Adapters(
            gbt=cfg.gbt26875,
            modbus=cfg.modbus,
            outbox=self.outbox,
            boot_id=self.boot_id,
            clock=self.clock,
            registry=self.metrics.registry,
            on_stored=self._wake.set,
            progress=self.progress,
            count_error=lambda thread: self.metrics.thread_errors.labels(thread).inc(),
            max_errors=cfg.supervision.max_errors,
        )

    def _stored(self, events: bool = True) -> None:
        """The intake committed a group: wake the sender, unless the group is telemetry only
        and the sender is lingering over telemetry already (it wakes at the linger's end and
        takes the new readings with it: one wake per uplink batch, not one per commit)."""
        if events or not self.sender.lingering:
            self._wake.set()

    @property
    def recent_rejects(self) -> Any:
        return self.intake.recent_rejects

    # ---- callbacks from other threads -----------------------------------------------------

    def _on_ack(self, seqs: list[int]) -> None:
        self.sender.on_ack(seqs)
        self._wake.set()

    def _on_config(self, payload: bytes) -> None:
        rejected = self.outbox.get_meta(REJECTED_VERSION_KEY)
        try:
            held = os.path.getsize(self.cfg.outbox.path)
        except OSError:
            held = 0
        outcome = parse_remote(self.cfg, payload, rejected_version=rejected, outbox_bytes=held)
        if outcome is None:
            return  # not newer than what runs (or was refused before)
        if isinstance(outcome, RemoteResult):
            self.outbox.set_meta(REJECTED_VERSION_KEY, outcome.version)
            self.metrics.config_results.labels("invalid").inc()
            log.error("remote configuration %d refused: %s", outcome.version, outcome.error)
            self.report(outcome)
            return
        log.info("remote configuration %d received; applying", outcome.version)
        self._remote = outcome
        self._wake.set()

    def report(self, result: RemoteResult) -> None:
        """Publish a remote configuration's result (now, or once the uplink is up)."""
        with self._results_lock:
            self._results.append(result)
        self._wake.set()

    def _flush_results(self) -> None:
        with self._results_lock:
            pending, self._results = self._results, []
        for i, r in enumerate(pending):
            if not self.link.publish(
                config_result_topic(self.cfg.gateway_id), r.to_json(), retain=True
            ):
                with self._results_lock:
                    self._results[:0] = pending[i:]
                return

    # ---- the sender loop ------------------------------------------------------------------

    def run(
        self, stop: threading.Event, *, until: threading.Event | None = None
    ) -> RemoteRequest | None:
        """Run until ``stop`` (or ``until``) is set; see the module's docstring."""
        metrics_server = None
        if self.cfg.metrics_port is not None:
            metrics_server, _t = start_http_server(
                self.cfg.metrics_port, addr="127.0.0.1", registry=self.metrics.registry
            )
        if self.cfg.log_level is not None:
            logging.getLogger("anju").setLevel(self.cfg.log_level)
        self.intake.start()
        self.adapters.start()  # adapters (docs/adapters.md)
        self.link.start()
        self.notifier.ready()
        log.info(
            "gateway %s started (boot %s, %d devices, config version %d)",
            self.cfg.gateway_id,
            self.boot_id,
            len(self.intake.known),
            self.cfg.config_version,
        )
        started = time.monotonic()
        self._next_beat = started + self.cfg.heartbeat_s
        next_status = 0.0
        self._next_clock = 0.0
        restarts = Restarts(
            "send",
            self.progress,
            self.metrics.thread_errors.labels("send").inc,
            max_errors=self.cfg.supervision.max_errors,
        )
        try:
            while not stop.is_set() and not (until is not None and until.is_set()):
                if self._remote is not None:
                    return self._remote
                self.progress.beat("send")
                try:
                    pause = self._turn(started)
                except Exception as exc:  # a bug: count it, start the sender again
                    if restarts.allow(exc):
                        self.sender.reset()
                    pause = 0.25
                now = time.monotonic()
                healthy = self._check_health()
                if now >= next_status:
                    next_status = now + self.cfg.status_every_s
                    self._publish_status(healthy=healthy)
                if healthy:
                    self.notifier.watchdog()
                self._wake.wait(pause)
                self._wake.clear()
            return None
        finally:
            self.notifier.stopping()
            self.adapters.stop()  # adapters: commit and confirm what they received
            self.intake.stop()
            self.link.close()
            self._publish_status(running=False)
            self.outbox.close()
            if metrics_server is not None:
                metrics_server.shutdown()
            log.info("gateway %s stopped", self.cfg.gateway_id)

    def _turn(self, started: float) -> float:
        """One turn of the sender loop; returns how long it may sleep."""
        now = time.monotonic()
        if now >= self._next_clock:
            self._next_clock = now + 1.0
            self._clock_turn(now - started)
        if not self.link.ready.is_set():
            self.sender.apply_acks()
            return 0.25
        if self.link.generation != self._connected_gen:
            self._connected_gen = self.link.generation
            self._said_healthy = None
            self.sender.reset()
        self._flush_results()
        pause = self.sender.pump(self.link.publish_batch, hold_telemetry=self.outbox.has_untimed())
        if now >= self._next_beat and self.progress.healthy():
            self._next_beat = now + self.cfg.heartbeat_s
            self.link.publish(self.link.state_topic, self.link.state(online=True), retain=True)
        return pause

    def _check_health(self) -> bool:
        """Healthy when no part is stalled; says so (retained state) when it changes; raises
        ``GatewayFailure`` when a part failed or stayed stalled too long."""
        if self.progress.failure is not None:
            raise self.progress.failure
        stalled = self.progress.stalled()
        healthy = not stalled
        self.metrics.healthy.set(1 if healthy else 0)
        if healthy != self._said_healthy and self.link.ready.is_set():
            if stalled:
                log.error("not healthy: %s making no progress", ", ".join(stalled))
            else:
                log.info("healthy: every part makes progress")
            if self.link.publish(
                self.link.state_topic,
                self.link.state(online=healthy, stalled=stalled),
                retain=True,
            ):
                self._said_healthy = healthy
        if stalled and self.progress.stalled_for() >= self.cfg.supervision.exit_after_s:
            self.progress.fail(stalled[0], f"no progress for {self.progress.stalled_for():.0f} s")
            assert self.progress.failure is not None
            raise self.progress.failure
        return healthy

    def _clock_turn(self, uptime_s: float) -> None:
        trusted = self.clock.trusted()
        self.metrics.clock_trusted.set(1 if trusted else 0)
        if not self.outbox.has_untimed():
            return
        if trusted:
            stamp = self.clock.stamp()
            n = self.outbox.restamp(stamp.kernel_boot, stamp.offset_ms)
            if n:
                self.metrics.restamped.inc(n)
                log.info("the clock is set: corrected the times of %d records", n)
        if self.outbox.has_untimed() and (trusted or uptime_s >= self.cfg.clock.hold_max_s):
            n = self.outbox.release_untimed("gateway_clock")
            self.metrics.time_flagged.labels("gateway_clock").inc(n)
            log.warning("%d records go with unverified times (flagged gateway_clock)", n)

    def _publish_status(self, *, running: bool = True, healthy: bool = True) -> None:
        try:
            self._write_status(running=running, healthy=healthy)
        except Exception as exc:  # the status is for people: never a reason to stop the alarms
            self.metrics.thread_errors.labels("status").inc()
            log.warning("cannot write the status file: %s: %s", type(exc).__name__, exc)

    def _write_status(self, *, running: bool, healthy: bool) -> None:
        depth = self.outbox.depth()
        now_ms = self.clock.wall_ms()
        self.metrics.outbox_depth.labels("events").set(depth.events)
        self.metrics.outbox_depth.labels("telemetry").set(depth.telemetry)
        self.metrics.inflight.set(self.sender.inflight)
        oldest = depth.oldest_created_ms
        self.metrics.oldest_age.set(0 if oldest is None else max(0, now_ms - oldest) / 1000)
        doc = {
            "gateway_id": self.cfg.gateway_id,
            "running": running,
            "pid": os.getpid(),
            "boot": self.boot_id,
            "updated_ms": now_ms,
            "config_version": self.cfg.config_version,
            "clock_trusted": self.clock.trusted(),
            "lan_connected": self.intake.ready.is_set(),
            "uplink": {
                "connected": self.link.ready.is_set(),
                "since_ms": self.link.connected_since_ms,
                "last_ack_ms": self.link.last_ack_ms,
                "last_error": self.link.last_error,
                "url": str(self.cfg.uplink.address()),
            },
            "inflight": self.sender.inflight,
            "dropped_telemetry": depth.dropped_telemetry,
            "dropped_events": depth.dropped_events,
            "healthy": healthy and self.progress.failure is None,
            "stalled": self.progress.stalled(),
        }
        if self.adapters.enabled:
            doc["adapters"] = self.adapters.state()
        write_status(self.cfg.status_path(), doc)


def device_event_bytes(cfg: GatewayConfig) -> int:
    """Bytes of events one device may hold: as configured, or half the disk budget shared
    among the gateway's devices (at least 256 KiB)."""
    if cfg.outbox.device_event_bytes_max is not None:
        return cfg.outbox.device_event_bytes_max
    return max(256 * 1024, cfg.outbox.max_bytes // (2 * max(1, len(cfg.devices))))
