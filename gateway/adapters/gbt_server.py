"""The gateway as the monitoring centre of GB/T 26875.3 user information transmission devices
(UITDs): a TCP server, one thread per connection, records committed through ``AdapterSink``.

Per frame received (command 2, send data):

1. decoded (``gbt26875``) and mapped (``gbt_map``) on the connection's thread;
2. submitted to the sink with a dedup key (UITD address, serial number, content);
3. confirmed (command 3, same serial number) by the sink's thread only after the commit.

A frame that cannot be used is denied (command 6, same serial) when its header can be trusted
(bad checksum, undecodable data unit, unknown UITD, unsupported command) and dropped otherwise
(no start marker, impossible length, no end marker): the stream then resynchronises on the next
``@@``. Every rejection is counted by reason. A connection has at most ``window`` frames waiting
for their commit; beyond that it stops reading, so a flooding UITD slows only itself. A half
frame is given ``partial_timeout_s`` before its first byte is dropped and the rest searched
again. Once the gateway's clock is trusted each UITD gets a time sync (command 1, unit 90) on
its first frame and every ``time_sync_s``.

Supervision (``gateway.supervise``): the accept loop marks the ``gbt_accept`` part on every
turn (half a second at most); an exception in it is logged, counted
(``anju_gateway_thread_errors_total{thread="gbt_accept"}``) and the loop carries on, up to
``supervision.max_errors`` a minute (then the gateway fails, exit 2). An exception in a
connection's thread is logged and counted (``thread="gbt_connection"``) and ends that
connection only: what it submitted is still committed and confirmed, the rest the UITD sends
again on its next connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from anju.errors import ConfigError
from gateway.adapters import gbt_tables as T
from gateway.adapters.config import Gbt26875Config
from gateway.adapters.gbt26875 import (
    Frame,
    Rejected,
    Time,
    decode_unit,
    deframe,
    reply,
    time_sync,
)
from gateway.adapters.gbt_map import AnalogOverride, Binding, Component, PanelState
from gateway.adapters.metrics import AdapterMetrics
from gateway.adapters.sink import AdapterSink, Submission, dedup_key
from gateway.clock import SystemClock
from gateway.supervise import Progress, Restarts

log = logging.getLogger("anju.gateway.gbt26875")

_RECV: Final = 65536
ACCEPT: Final = "gbt_accept"
CONNECTION: Final = "gbt_connection"


def bindings(cfg: Gbt26875Config) -> dict[bytes, Binding]:
    analog = {k: AnalogOverride(v.metric, v.scale) for k, v in cfg.analog.items()}
    out: dict[bytes, Binding] = {}
    for u in cfg.uitds:
        comps = {
            (c.system_addr, c.component_addr): Component(c.device, c.building, c.location)
            for c in u.components
        }
        out[bytes.fromhex(u.source_address)] = Binding(u.device, cfg.utc_offset_min, comps, analog)
    return out


class UitdServer:
    """Listens for UITDs; ``start``/``stop``; ``port`` once started."""

    def __init__(
        self,
        cfg: Gbt26875Config,
        sink: AdapterSink,
        metrics: AdapterMetrics,
        clock: SystemClock,
        *,
        progress: Progress | None = None,
        count_error: Callable[[str], object] | None = None,
        max_errors: int = 5,
    ) -> None:
        self.cfg = cfg
        self.progress = progress or Progress(60.0, ())
        self.count_error = count_error or (lambda _thread: None)
        self.max_errors = max_errors
        self.sink = sink
        self.metrics = metrics
        self.clock = clock
        self.bindings = bindings(cfg)
        self.centre = bytes.fromhex(cfg.centre_address)
        self.port = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._conns: set[_Connection] = set()
        self._panel_states: dict[bytes, PanelState] = {}
        self._lock = threading.Lock()
        self._serial = 0
        self._accept: threading.Thread | None = None

    def start(self) -> None:
        try:
            sock = socket.create_server((self.cfg.host, self.cfg.port), backlog=64)
        except OSError as exc:
            where = f"{self.cfg.host}:{self.cfg.port}"
            raise ConfigError(f"gbt26875: cannot listen on {where}: {exc.strerror or exc}") from exc
        sock.settimeout(0.5)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.progress.add(ACCEPT)
        self._accept = threading.Thread(target=self._accept_loop, name="gw-gbt-accept", daemon=True)
        self._accept.start()
        log.info("GB/T 26875.3 server listening on %s:%d", self.cfg.host, self.port)

    def stop(self) -> None:
        self._stop.set()
        if self._accept is not None:
            self._accept.join(5)
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.join(5)

    def state(self) -> dict[str, Any]:
        """For ``anju gateway status``: where it listens and each UITD connected."""
        with self._lock:
            conns = sorted(self._conns, key=lambda c: c.since_ms)
        return {
            "listening": f"{self.cfg.host}:{self.port}",
            "connections": [
                {
                    "peer": c.peer,
                    "since_ms": c.since_ms,
                    "last_frame_ms": c.last_frame_ms,
                    "uitds": sorted(s.hex() for s in list(c.states)),
                }
                for c in conns
            ],
        }

    def panel_state(self, source: bytes, binding: Binding) -> PanelState | None:
        """The UITD's component states, kept across its reconnections (so that a status
        repeated after a reconnection is not a new edge); at most 256 unknown UITDs."""
        with self._lock:
            st = self._panel_states.get(source)
            if st is None:
                if len(self._panel_states) >= len(self.bindings) + 256:
                    return None
                st = self._panel_states[source] = PanelState(binding)
            return st

    def next_serial(self) -> int:
        with self._lock:
            self._serial = (self._serial + 1) & 0xFFFF
            return self._serial

    def now_label(self) -> Time:
        return Time.from_epoch_ms(self.clock.wall_ms(), self.cfg.utc_offset_min)

    def reject(self, reason: str, detail: str, peer: str) -> None:
        self.metrics.gbt_rejected.labels(reason).inc()
        log.debug("UITD %s: %s (%s)", peer, reason, detail)

    def _accept_loop(self) -> None:
        restarts = Restarts(
            ACCEPT,
            self.progress,
            lambda: self.count_error(ACCEPT),
            max_errors=self.max_errors,
        )
        while not self._stop.is_set() and not self.progress.failed:
            self.progress.beat(ACCEPT)
            try:
                self._accept_one()
            except Exception as exc:  # a bug: counted; the server goes on listening
                if not restarts.allow(exc):
                    return
                time.sleep(0.1)

    def _accept_one(self) -> None:
        assert self._sock is not None
        try:
            conn, addr = self._sock.accept()
        except TimeoutError:
            return
        except OSError as exc:
            if not self._stop.is_set():
                log.warning("accept failed: %s", exc)
                time.sleep(0.1)
            return
        try:
            self._adopt(conn, addr)
        except BaseException:
            conn.close()
            raise

    def _adopt(self, conn: socket.socket, addr: Any) -> None:
        peer = f"{addr[0]}:{addr[1]}"
        with self._lock:
            full = len(self._conns) >= self.cfg.max_connections
        if full:
            self.reject("too_many_connections", peer, peer)
            conn.close()
            return
        c = _Connection(self, conn, peer)
        with self._lock:
            self._conns.add(c)
            self.metrics.gbt_connections.set(len(self._conns))
        c.start()

    def forget(self, c: _Connection) -> None:
        with self._lock:
            self._conns.discard(c)
            self.metrics.gbt_connections.set(len(self._conns))


class _Connection(threading.Thread):
    def __init__(self, server: UitdServer, sock: socket.socket, peer: str) -> None:
        super().__init__(name=f"gw-gbt-{peer}", daemon=True)
        self.srv = server
        self.sock = sock
        self.peer = peer
        self.window = threading.BoundedSemaphore(server.cfg.window)
        self.send_lock = threading.Lock()
        self.states: dict[bytes, PanelState] = {}
        self.next_sync: dict[bytes, float] = {}
        self.closed = False
        self.since_ms = server.clock.wall_ms()
        self.last_frame_ms: int | None = None  # the last well-formed frame

    def run(self) -> None:
        srv, cfg = self.srv, self.srv.cfg
        buf = bytearray()
        self.sock.settimeout(0.25)
        last_rx = time.monotonic()
        partial_since = 0.0
        try:
            while not srv._stop.is_set():
                try:
                    chunk = self.sock.recv(_RECV)
                except TimeoutError:
                    chunk = None
                now = time.monotonic()
                if chunk == b"":
                    break  # closed by the UITD
                if chunk:
                    last_rx = now
                    if not buf:
                        partial_since = now
                    buf += chunk
                    items, used = deframe(buf)
                    if used:
                        del buf[:used]
                        partial_since = now
                    for item in items:
                        self._handle(item)
                elif now - last_rx > cfg.idle_timeout_s:
                    log.info("UITD %s silent for %.0f s: closing", self.peer, now - last_rx)
                    break
                if buf and now - partial_since > cfg.partial_timeout_s:
                    srv.reject("partial_timeout", f"{len(buf)} bytes of a half frame", self.peer)
                    del buf[:1]
                    items, used = deframe(buf)
                    del buf[:used]
                    partial_since = now
                    for item in items:
                        self._handle(item)
                self._maybe_sync(now)
        except OSError as exc:
            log.info("UITD %s: connection lost (%s)", self.peer, exc)
        except Exception as exc:  # a bug: this connection ends, the others go on
            srv.count_error(CONNECTION)
            log.error(
                "UITD %s: unexpected %s: %s; closing this connection",
                self.peer,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        finally:
            # Frames already submitted are committed and their confirms attempted; wait for
            # them so that the socket is closed only after (a confirm lost with it is resent
            # by the UITD and then recognised as a repeat).
            deadline = time.monotonic() + (0 if srv.progress.failed else 10)
            for _ in range(srv.cfg.window):
                if not self.window.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    break
            self.closed = True
            self.sock.close()
            srv.forget(self)

    # ---- frames ------------------------------------------------------------------------------

    def _handle(self, item: Frame | Rejected) -> None:
        srv = self.srv
        if isinstance(item, Rejected):
            srv.reject(item.reason, item.detail, self.peer)
            if item.frame is not None:
                self._send(reply(item.frame, T.CMD_DENY, srv.centre, srv.now_label()), T.CMD_DENY)
            return
        f = item
        self.last_frame_ms = srv.clock.wall_ms()
        srv.metrics.gbt_frames.labels(T.COMMANDS.get(f.command, "other")).inc()
        if f.command in (T.CMD_CONFIRM, T.CMD_REPLY):
            return  # the UITD confirms our time sync
        if f.command == T.CMD_DENY:
            log.info("UITD %s denied our frame %d", f.source.hex(), f.serial)
            return
        state = self._state(f.source)
        if state is None:
            srv.reject("unknown_uitd", f.source.hex(), self.peer)
            self._send(reply(f, T.CMD_DENY, srv.centre, srv.now_label()), T.CMD_DENY)
            return
        if f.command != T.CMD_SEND:
            srv.reject("unsupported_command", str(f.command), self.peer)
            self._send(reply(f, T.CMD_DENY, srv.centre, srv.now_label()), T.CMD_DENY)
            return
        rx = srv.clock.wall_ms()
        if not f.data:
            items = state.heartbeat(rx)
        else:
            unit = decode_unit(f.data)
            if isinstance(unit, Rejected):
                srv.reject(unit.reason, unit.detail, self.peer)
                self._send(reply(f, T.CMD_DENY, srv.centre, srv.now_label()), T.CMD_DENY)
                return
            srv.metrics.gbt_units.labels(T.UNIT_TYPES.get(unit.type, str(unit.type))).inc()
            items = state.records(unit, rx_ms=rx, clock_trusted=srv.clock.trusted())
        mid, digest = dedup_key(f.source, f.serial, f.time.to_bytes() + f.data)
        self.window.acquire()  # at most `window` frames of this connection in the sink
        srv.sink.submit(Submission(items, lambda: self._confirmed(f), mid, digest))

    def _confirmed(self, f: Frame) -> None:
        """On the sink's thread, after the commit."""
        try:
            srv = self.srv
            self._send(reply(f, T.CMD_CONFIRM, srv.centre, srv.now_label()), T.CMD_CONFIRM)
        finally:
            self.window.release()

    def _state(self, source: bytes) -> PanelState | None:
        st = self.states.get(source)
        if st is not None:
            return st
        binding = self.srv.bindings.get(source)
        if binding is None:
            if not self.srv.cfg.accept_unknown:
                return None
            binding = Binding(f"uitd-{source.hex()}", self.srv.cfg.utc_offset_min)
        if len(self.states) >= 16:
            return None  # one connection speaking for many addresses: not a UITD
        st = self.srv.panel_state(source, binding)
        if st is None:
            return None
        self.states[source] = st
        self.next_sync[source] = 0.0
        log.info("UITD %s (%s) connected from %s", source.hex(), binding.device_id, self.peer)
        return st

    def _maybe_sync(self, now: float) -> None:
        srv = self.srv
        if not self.next_sync or not srv.clock.trusted():
            return
        for source, due in self.next_sync.items():
            if now >= due:
                self.next_sync[source] = now + srv.cfg.time_sync_s
                frame = time_sync(srv.next_serial(), srv.centre, source, srv.now_label())
                self._send(frame, T.CMD_CONTROL)

    def _send(self, frame: bytes, command: int) -> None:
        """Never blocks (the sink's thread sends confirms for every connection): a UITD that
        does not read its replies until its socket buffer is full is disconnected; it will
        resend what was not confirmed, and the repeats are recognised."""
        if self.closed:
            return
        try:
            with self.send_lock:
                n = self.sock.send(frame, socket.MSG_DONTWAIT)
            if n != len(frame):
                raise BlockingIOError("partial send")
            self.srv.metrics.gbt_replies.labels(T.COMMANDS[command]).inc()
        except OSError as exc:
            log.warning("UITD %s: cannot send (%s); closing", self.peer, exc)
            self.srv.reject("send_blocked", str(exc), self.peer)
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
