"""LAN intake: the devices' broker in, group commit into the outbox, then the PUBACK.

The LAN client runs with ``manual_ack``: paho does not acknowledge a QoS 1 message when the
callback returns. The callback validates the message and puts it on a bounded queue; the
committer thread takes everything waiting (up to ``outbox.commit_max`` messages), stores it in
one transaction, and only then acknowledges each message to the broker. A message is therefore
on disk before the broker forgets it; one fsync serves a whole group.

Queue policy: the queue holds at most ``outbox.queue_max`` messages. When it is full the LAN
network thread waits (TCP back-pressure towards the LAN broker, which keeps the messages in the
gateway's persistent session); nothing is dropped. A commit that fails (disk full) is retried
with backoff and nothing is acknowledged meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sqlite3
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from anju.backoff import backoff
from anju.uplink import record_body
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.mqttclient import configure
from gateway.outbox import EVENTS, LANE_NAMES, TELEMETRY, Incoming, Outbox
from gateway.validate import Accepted, Rejected, decode_device_message

log = logging.getLogger("anju.gateway.lan")

_MAX_REJECT_KEYS = 1_000
_REJECTS_PER_DEVICE = 5
DEVICE_TOPICS = ("anju/dev/+/telemetry", "anju/dev/+/event", "anju/dev/+/status")


@dataclass(frozen=True, slots=True)
class _Pending:
    incoming: Incoming
    qos: int
    rx_ms: int


class LanIntake:
    """Owns the LAN client and the committer thread; ``start``/``stop``."""

    def __init__(
        self,
        cfg: GatewayConfig,
        outbox: Outbox,
        metrics: GatewayMetrics,
        clock: SystemClock,
        boot_id: str,
        on_stored: Any,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock
        self.boot_id = boot_id
        self.on_stored = on_stored  # called after each commit (wakes the sender)
        self.known = frozenset(cfg.devices)
        self.ready = threading.Event()  # subscribed to the devices' topics
        self.recent_rejects: OrderedDict[str, deque[tuple[int, str, bytes]]] = OrderedDict()
        self._queue: queue.Queue[_Pending | None] = queue.Queue(cfg.outbox.queue_max)
        self._lock = threading.Lock()
        self._log_budget: dict[str, tuple[int, int]] = {}
        self._committer = threading.Thread(
            target=self._commit_loop, name=f"gw-{cfg.gateway_id}-commit", daemon=True
        )
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"anju-{cfg.gateway_id}-lan",
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        configure(c, cfg.lan)
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *_: self.ready.set()
        c.on_disconnect = lambda *_: self.ready.clear()
        self.client = c

    def start(self) -> None:
        self._committer.start()
        addr = self.cfg.lan.address()
        self.client.connect_async(addr.host, addr.port, keepalive=self.cfg.lan.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Stop taking messages, commit and acknowledge what was taken, then disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
        self._queue.put(None)
        self._committer.join(30)

    # ---- the LAN network thread -----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("LAN broker refused the connection: %s", rc)
            return
        log.info("connected to the LAN broker %s", self.cfg.lan.address())
        client.subscribe([(t, 1) for t in DEVICE_TOPICS])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        rx = self.clock.wall_ms()
        payload = bytes(msg.payload)
        trusted = self.clock.trusted()
        items = decode_device_message(
            msg.topic, payload, known=self.known, rx_ms=rx, clock_trusted=trusted
        )
        good: list[tuple[int, str]] = []
        for item in items:
            if isinstance(item, Rejected):
                self._reject(item, payload, rx)
                continue
            assert isinstance(item, Accepted)
            if item.time_flag is not None:
                self.metrics.time_flagged.labels(item.time_flag).inc()
            good.append(
                (
                    TELEMETRY if item.kind == "t" else EVENTS,
                    record_body(
                        device_id=item.device_id,
                        kind=item.kind,
                        ts=item.ts,
                        rx=rx,
                        gateway_timed=item.gateway_timed,
                        payload=item.payload,
                        time_flag=item.time_flag,
                    ),
                )
            )
        digest = None
        if msg.qos > 0:
            digest = hashlib.blake2b(msg.topic.encode() + b"\0" + payload, digest_size=16).digest()
        # Even an all-invalid QoS 1 message goes through the committer, so that its PUBACK
        # keeps its place in order.
        pending = _Pending(Incoming(good, msg.mid, digest, bool(msg.dup)), msg.qos, rx)
        self._queue.put(pending)  # waits when full: back-pressure, nothing dropped

    def _reject(self, item: Rejected, payload: bytes, rx: int) -> None:
        self.metrics.rejected.labels(item.reason).inc()
        key = item.device_id or "?"
        with self._lock:
            ring = self.recent_rejects.pop(key, None) or deque(maxlen=_REJECTS_PER_DEVICE)
            ring.append((rx, item.reason, payload[:1024]))
            self.recent_rejects[key] = ring
            while len(self.recent_rejects) > _MAX_REJECT_KEYS:
                self.recent_rejects.popitem(last=False)
        minute = rx // 60_000
        last_minute, count = self._log_budget.get(item.reason, (minute, 0))
        count = count + 1 if last_minute == minute else 1
        self._log_budget[item.reason] = (minute, count)
        if count <= 10:
            log.warning("rejected input from %s: %s (%s)", key, item.reason, item.detail)
        elif count == 11:
            log.warning("more %s rejections this minute are counted, not logged", item.reason)

    # ---- the committer thread -------------------------------------------------------------

    def _commit_loop(self) -> None:
        limit = self.cfg.outbox.commit_max
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            while len(group) < limit:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        delays = backoff(0.2, 5.0)
        messages = [p.incoming for p in group if p.incoming.items or p.incoming.digest]
        while True:
            try:
                res = self.outbox.append(
                    self.boot_id, messages, self.clock.wall_ms(), self.clock.stamp()
                )
                break
            except sqlite3.OperationalError as exc:  # disk full, I/O error: do not ack
                self.metrics.store_errors.inc()
                delay = next(delays)
                log.error("cannot store in the outbox (%s); again in %.1f s", exc, delay)
                threading.Event().wait(delay)
        for p in group:
            if p.qos > 0:
                self.client.ack(p.incoming.mid, p.qos)
        if res.duplicates:
            self.metrics.lan_duplicates.inc(res.duplicates)
        if res.dropped:
            self.metrics.dropped.labels("telemetry").inc(res.dropped)
            log.warning("outbox over its disk budget: dropped %d oldest readings", res.dropped)
        per_lane = [0, 0]
        for m in messages:
            for lane, _ in m.items:
                per_lane[lane] += 1
        for lane, n in enumerate(per_lane):
            if n:
                self.metrics.accepted.labels(LANE_NAMES[lane]).inc(n)
        self.on_stored()
