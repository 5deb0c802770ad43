"""LAN intake: the devices' broker in, group commit into the outbox, then the PUBACK.

The LAN client runs with ``manual_ack``: paho does not acknowledge a QoS 1 message when the
callback returns. The callback validates the message and puts it on a bounded queue; the
committer thread takes everything waiting (up to ``outbox.commit_max`` messages), stores it in
one transaction, and only then acknowledges each message to the broker. A message is therefore
on disk before the broker forgets it; one fsync serves a whole group.

Batching by time: when the queue runs dry before ``commit_max`` and the group holds only
telemetry (and rejections), the committer waits up to ``outbox.commit_linger_ms`` for more, so
that devices sending one reading per message still share a transaction. A group holding an
event or a status is committed at once: alarms are never delayed.

Queue policy: the queue holds at most ``outbox.queue_max`` messages. When it is full the LAN
network thread waits (TCP back-pressure towards the LAN broker, which keeps the messages in the
gateway's persistent session); nothing is dropped. A commit that fails (disk full) is retried
with backoff and nothing is acknowledged meanwhile.

Supervision (``gateway.supervise``): the LAN network thread is ours (paho's ``loop`` in a loop,
reconnecting with backoff) and marks ``intake`` progress on every turn; the committer marks
``commit``. An exception while handling one message is counted (``internal_error``) and the
message is still acknowledged in order, so it does not come back; nothing a message contains
can end either thread. A group the outbox refuses for another reason than I/O is stored one
message at a time: the messages it then refuses are rejected as ``unstorable`` (and
acknowledged) only when an empty transaction proves the outbox itself works; otherwise nothing
is acknowledged and the committer fails the gateway (the process restarts, the LAN broker
delivers the messages again).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from anju.backoff import backoff
from anju.uplink import record_body
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.lanclient import FAST, LanClient
from gateway.metrics import GatewayMetrics
from gateway.mqttclient import configure, finish
from gateway.outbox import EVENTS, LANE_NAMES, TELEMETRY, Incoming, Outbox
from gateway.supervise import Progress, Restarts
from gateway.validate import Accepted, Rejected, decode_device_message

log = logging.getLogger("anju.gateway.lan")

_MAX_REJECT_KEYS = 1_000
_REJECTS_PER_DEVICE = 5
DEVICE_TOPICS = ("anju/dev/+/telemetry", "anju/dev/+/event", "anju/dev/+/status")


class _Handoff:
    """The LAN thread's messages to the committer, at most ``maxsize`` waiting: a deque
    (``append`` and ``popleft`` need no lock) and a condition only to sleep on, for the
    committer when it is empty and for the LAN thread when it is full (``queue.Queue`` takes
    a lock and notifies on every put and get: a few microseconds per message, twice)."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[_Pending | None] = deque()
        self._max = maxsize
        self._cond = threading.Condition(threading.Lock())
        self._getters = 0  # sleeping (or about to) on the condition; changed under its lock
        self._putters = 0

    def put(self, item: _Pending | None, timeout: float) -> None:
        """Raises ``queue.Full`` when still full after ``timeout``."""
        if len(self._items) >= self._max:
            with self._cond:
                self._putters += 1
                try:
                    if len(self._items) >= self._max:
                        self._cond.wait(timeout)
                    if len(self._items) >= self._max:
                        raise queue.Full
                finally:
                    self._putters -= 1
        self._items.append(item)
        # A getter counted before this append is sleeping (or will find the item when it
        # looks, under the lock): wake it. One counted after it sees the item anyway.
        if self._getters:
            with self._cond:
                self._cond.notify_all()

    def get_nowait(self) -> _Pending | None:
        try:
            item = self._items.popleft()
        except IndexError:
            raise queue.Empty from None
        if self._putters:
            with self._cond:
                self._cond.notify_all()
        return item

    def get(self, timeout: float) -> _Pending | None:
        if not self._items:
            with self._cond:
                self._getters += 1
                try:
                    if not self._items:
                        self._cond.wait(timeout)
                finally:
                    self._getters -= 1
        return self.get_nowait()


@dataclass(slots=True)  # (not frozen: one per LAN message, and a frozen __init__ costs 4x)
class _Pending:
    incoming: Incoming
    qos: int
    rx_ms: int
    urgent: bool  # holds an event or a status: committed without lingering
    payload: bytes = b""  # kept for ``recent_rejects`` should the outbox refuse it


class LanIntake:
    """Owns the LAN client, its network thread and the committer thread; ``start``/``stop``."""

    def __init__(
        self,
        cfg: GatewayConfig,
        outbox: Outbox,
        metrics: GatewayMetrics,
        clock: SystemClock,
        boot_id: str,
        on_stored: Any,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.metrics = metrics
        self.clock = clock
        self.boot_id = boot_id
        self.on_stored = on_stored  # called after each commit (wakes the sender): (events?)
        self.progress = progress or Progress(cfg.supervision.stall_s)
        self.known = frozenset(cfg.devices)
        self.ready = threading.Event()  # subscribed to the devices' topics
        self.recent_rejects: OrderedDict[str, deque[tuple[int, str, bytes]]] = OrderedDict()
        self._queue = _Handoff(cfg.outbox.queue_max)
        self._linger_s = cfg.outbox.commit_linger_ms / 1000
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._urgent = threading.Event()  # an event or a status was queued: no lingering
        self._subscribed = False  # set once a connection got as far as its subscription
        self._log_budget: dict[str, tuple[int, int]] = {}
        # The receive time, read from the clock once per chunk read from the socket (the
        # messages of one chunk arrived together): (chunk number, wall ms, clock trusted).
        self._rx: tuple[int, int, bool] = (-1, 0, False)
        gw = cfg.gateway_id
        self._committer = threading.Thread(
            target=self._commit_loop, name=f"gw-{gw}-commit", daemon=True
        )
        self._network = threading.Thread(target=self._lan_loop, name=f"gw-{gw}-lan", daemon=True)
        c = LanClient(
            CallbackAPIVersion.VERSION2,
            client_id=f"anju-{gw}-lan",
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        configure(c, cfg.lan)
        c.on_connect = self._on_connect
        c.on_message = self._on_message  # (what paho's own reader takes)
        c.on_raw_message = self._on_raw  # (whole PUBLISH packets from the read buffer)
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = lambda *_: self.ready.clear()
        self.client = c

    def start(self) -> None:
        self._committer.start()
        self._network.start()

    def stop(self) -> None:
        """Stop taking messages, commit and acknowledge what was taken, then disconnect."""
        self.client.disconnect()  # queued; the network thread writes it, then sees the stop
        self._stop.set()
        self._network.join(10)
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:  # the committer is gone or stuck: what is queued is not acknowledged
            log.error("the committer does not take its queue; stopping without it")
        # A failed gateway does not wait long for a stuck committer: nothing it holds is
        # acknowledged, the LAN broker delivers it again to the next process.
        self._committer.join(2.0 if self.progress.failed else 30.0)

    # ---- the LAN network thread -----------------------------------------------------------

    def _lan_loop(self) -> None:
        """Connect, run paho's loop until the link drops, wait (backoff), again."""
        addr = self.cfg.lan.address()
        restarts = Restarts(
            "intake",
            self.progress,
            self.metrics.thread_errors.labels("intake").inc,
            max_errors=self.cfg.supervision.max_errors,
        )
        delays = backoff(0.5, 10.0)
        while not self._stop.is_set() and not self.progress.failed:
            self.progress.beat("intake")
            try:
                self.client.connect(addr.host, addr.port, keepalive=self.cfg.lan.keepalive_s)
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                while not self._stop.is_set() and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = self.client.loop(timeout=0.2)
                    self.progress.beat("intake")
                if self._stop.is_set():
                    finish(self.client)  # write the DISCONNECT, close the socket
                    break
                log.warning("LAN broker connection lost (%s)", rc.name)
            except (OSError, ValueError) as exc:
                log.warning("LAN broker %s unreachable: %s", addr, exc)
            except Exception as exc:  # a bug in paho or in a callback: count, reconnect
                if not restarts.allow(exc):
                    return
            self.ready.clear()
            if self._subscribed:  # the last connection worked: start the delays again
                self._subscribed = False
                delays = backoff(0.5, 10.0)
            self._stop.wait(next(delays))
        finish(self.client, 0.0)  # whatever way the loop ended: nothing left open

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed = True
        self.ready.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("LAN broker refused the connection: %s", rc)
            return
        log.info("connected to the LAN broker %s", self.cfg.lan.address())
        client.subscribe([(t, 1) for t in DEVICE_TOPICS])

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_raw(msg._topic, bytes(msg.payload), msg.qos, msg.mid, bool(msg.dup))

    def _on_raw(self, topic: bytes, payload: bytes, qos: int, mid: int, dup: bool) -> None:
        """Never raises: a message that makes its handling fail is counted and acknowledged."""
        try:
            pending = self._decode(topic, payload, qos, mid, dup)
        except Exception as exc:
            self.metrics.thread_errors.labels("intake").inc()
            log.exception("intake: handling a LAN message failed")
            rx = self.clock.wall_ms()
            self._reject(Rejected(None, "internal_error", f"{type(exc).__name__}: {exc}"), b"", rx)
            pending = _Pending(Incoming([], mid), qos, rx, urgent=True)
        while True:  # waits when full: back-pressure, nothing dropped
            try:
                self._queue.put(pending, timeout=1.0)
                if pending.urgent:
                    self._urgent.set()
                return
            except queue.Full:
                self.progress.beat("intake")  # waiting on the committer, whose mark counts

    def _decode(self, topic_b: bytes, payload: bytes, qos: int, mid: int, dup: bool) -> _Pending:
        chunk = self.client.chunks
        if FAST and chunk == self._rx[0]:
            _chunk, rx, trusted = self._rx
        else:
            rx, trusted = self.clock.wall_ms(), self.clock.trusted()
            self._rx = (chunk, rx, trusted)
        try:
            topic = topic_b.decode("utf-8")
        except UnicodeDecodeError:  # (MQTT requires UTF-8; a broker may not check)
            items: list[Accepted | Rejected] = [
                Rejected(None, "bad_topic", f"topic {topic_b[:128]!r} is not UTF-8")
            ]
        else:
            items = decode_device_message(
                topic, payload, known=self.known, rx_ms=rx, clock_trusted=trusted
            )
        good: list[tuple[int, str]] = []
        urgent = False
        for item in items:
            if not isinstance(item, Accepted):
                self._reject(item, payload, rx)
                continue
            if item.time_flag is not None:
                self.metrics.time_flagged.labels(item.time_flag).inc()
            if item.kind == "t":
                lane = TELEMETRY
            else:
                lane = EVENTS
                urgent = True
            good.append(
                (
                    lane,
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
        if qos > 0:
            digest = blake2b(topic_b + b"\0" + payload, digest_size=16).digest()
        # Even an all-invalid QoS 1 message goes through the committer, so that its PUBACK
        # keeps its place in order.
        return _Pending(Incoming(good, mid, digest, dup), qos, rx, urgent, payload)

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

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """``first`` and what follows it into one group; True when the stop mark was met."""
        limit = self.cfg.outbox.commit_max
        group = [first]
        urgent = first.urgent
        deadline: float | None = None
        while len(group) < limit:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                if urgent or self._linger_s <= 0:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._linger_s
                if now >= deadline:
                    break
                # Sleep out the linger (not woken by each message that arrives meanwhile),
                # unless an event arrives: then at once.
                if self._urgent.wait(deadline - now):
                    self._urgent.clear()
                continue
            if nxt is None:
                return group, True
            group.append(nxt)
            urgent = urgent or nxt.urgent
        return group, False

    def _commit_loop(self) -> None:
        restarts = Restarts(
            "commit",
            self.progress,
            self.metrics.thread_errors.labels("commit").inc,
            max_errors=self.cfg.supervision.max_errors,
        )
        stopping = False
        while not stopping and not self.progress.failed:
            self.progress.beat("commit")
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            self._urgent.clear()
            if first is None:
                break
            group, stopping = self._gather(first)
            try:
                self._commit(group)
            except Exception as exc:
                if not restarts.allow(exc):
                    return  # nothing of the group acknowledged: the broker keeps it
                if not self._commit_singly(group):
                    return

    def _commit_singly(self, group: list[_Pending]) -> bool:
        """The group failed: store its messages one by one; reject those refused alone, if the
        outbox itself works. False (and the gateway failed) when it does not."""
        refused: list[_Pending] = []
        for p in group:
            try:
                self._commit([p], ack=False)  # (the PUBACKs below, in the group's order)
            except Exception as exc:
                log.error("the outbox refused one LAN message: %s: %s", type(exc).__name__, exc)
                refused.append(p)
        if not refused:
            self.client.ack_many(p.incoming.mid for p in group if p.qos > 0)
            return True
        try:
            self.outbox.append(self.boot_id, [], self.clock.wall_ms())  # an empty transaction
        except Exception as exc:
            self.progress.fail("commit", f"the outbox does not work: {type(exc).__name__}: {exc}")
            return False
        for p in refused:
            for _lane, _body in p.incoming.items:
                self._reject(
                    Rejected(None, "unstorable", "the outbox refused it"), p.payload, p.rx_ms
                )
        # MQTT 3.1.1 (4.6): PUBACKs in the order the PUBLISH packets came, the refused ones
        # in their places (acknowledging them after the others reordered them).
        self.client.ack_many(p.incoming.mid for p in group if p.qos > 0)
        return True

    def _commit(self, group: list[_Pending], *, ack: bool = True) -> None:
        delays = backoff(0.2, 5.0)
        messages = [p.incoming for p in group if p.incoming.items or p.incoming.digest]
        while True:
            try:
                res = self.outbox.append(
                    self.boot_id, messages, self.clock.wall_ms(), self.clock.stamp()
                )
                break
            except sqlite3.OperationalError as exc:  # disk full, I/O error: do not ack
                # No progress mark meanwhile: a commit that cannot store is not healthy.
                self.metrics.store_errors.inc()
                delay = next(delays)
                log.error("cannot store in the outbox (%s); again in %.1f s", exc, delay)
                time.sleep(delay)
        if ack:
            self.client.ack_many(p.incoming.mid for p in group if p.qos > 0)  # one write
        if res.duplicates:
            self.metrics.lan_duplicates.inc(res.duplicates)
        if res.dropped:
            self.metrics.dropped.labels("telemetry").inc(res.dropped)
            log.warning("outbox over its disk budget: dropped %d oldest readings", res.dropped)
        for dev, n in res.dropped_events.items():
            self.metrics.dropped_events.labels(dev).inc(n)
        per_lane = [0, 0]
        for m in messages:
            for lane, _ in m.items:
                per_lane[lane] += 1
        for lane, n in enumerate(per_lane):
            if n:
                self.metrics.accepted.labels(LANE_NAMES[lane]).inc(n)
        self.on_stored(per_lane[EVENTS] > 0)
