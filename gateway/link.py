"""The uplink: one MQTT 5 connection to the backend's broker, driven by a thread of our own.

paho's own reconnect doubles its delay without jitter, so a thousand gateways cut off by the same
outage would come back in lock-step. This thread connects, runs paho's ``loop`` until the link
drops, then waits before the next attempt (``reconnect_delays``): for the first
``uplink.fast_backoff_for_s`` (300 s) of an outage, decorrelated jitter between half of
``fast_backoff_cap_s`` and all of it (2-4 s), so a gateway is back within seconds of
the broker and a thousand gateways come back spread over those seconds; after that, capped
full jitter up to ``backoff_cap_s`` (60 s), so a long outage costs the broker little. The
outage starts again after a successful CONNACK.

Every connection starts clean (``clean_start``): the sender resends whatever is unconfirmed,
so nothing depends on the broker keeping a session. On connect the link subscribes to the
backend's confirmations (and the remote configuration), and publishes the retained state
``{"online": true, ...}``; the Last Will sets ``{"online": false}``.

Limits: the CONNECT asks the broker for a Maximum Packet Size (``uplink.max_packet_bytes``,
MQTT 5), so a larger packet is never sent to the gateway to buffer. A confirmation is parsed
with ``anju.canonical`` within ``MAX_ACK_BYTES`` and at most ``MAX_ACK_SEQS`` sequence numbers;
anything else is rejected and counted (``anju_gateway_rejected_total{reason="bad_ack"}``).

Supervision: the thread marks ``uplink`` progress on every turn (also while it waits to
reconnect); an exception in a callback is counted and the message dropped, one in paho's loop
is counted and the connection started again (``gateway.supervise.Restarts``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from anju import canonical
from anju.backoff import backoff, decorrelated
from anju.canonical import InputError
from anju.uplink import ack_topic, config_topic, state_topic, up_topic
from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.mqttclient import configure, finish
from gateway.supervise import Progress, Restarts

log = logging.getLogger("anju.gateway.uplink")

MAX_ACK_BYTES = 1024 * 1024
MAX_ACK_SEQS = 50_000
_ACK_DECODER = json.JSONDecoder()


def parse_ack(payload: bytes) -> list[int]:
    """Sequence numbers in a confirmation ``{"seqs": [...]}``; ``InputError`` when it is not
    one within the bounds."""
    if len(payload) > MAX_ACK_BYTES:
        raise InputError("too_large", f"{len(payload)} bytes > {MAX_ACK_BYTES}")
    try:  # the fast path: one prebuilt decoder, no hook per number (acks are all numbers)
        doc = _ACK_DECODER.decode(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        doc = canonical.loads(payload, max_bytes=MAX_ACK_BYTES)  # raises, with the reason
    seqs = doc.get("seqs") if isinstance(doc, dict) else None
    if not isinstance(seqs, list):
        raise InputError("bad_ack", 'expected {"seqs": [...]}')
    if len(seqs) > MAX_ACK_SEQS:
        raise InputError("bad_ack", f"{len(seqs)} sequence numbers > {MAX_ACK_SEQS}")
    if not all(type(x) is int and 0 < x < 2**63 for x in seqs):
        raise InputError("bad_ack", "sequence numbers must be positive integers")
    return seqs


def reconnect_delays(
    base_s: float,
    fast_cap_s: float,
    fast_for_s: float,
    cap_s: float,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[float]:
    """Delays between connection attempts in one outage (starting now): decorrelated jitter
    between ``max(base_s, fast_cap_s / 2)`` and ``fast_cap_s`` for ``fast_for_s``, then full
    jitter growing up to ``cap_s``. The floor of half the cap spreads a crowd's reconnections:
    with delays of 2-4 s a thousand gateways come back over four seconds, not in the first."""
    r = rng or random.Random()
    until = clock() + fast_for_s
    fast = decorrelated(max(base_s, fast_cap_s / 2), fast_cap_s, r)
    while clock() < until:
        yield next(fast)
    yield from backoff(min(fast_cap_s, base_s), cap_s, r)


class Uplink:
    def __init__(
        self,
        cfg: GatewayConfig,
        boot_id: str,
        metrics: GatewayMetrics,
        *,
        on_ack: Callable[[list[int]], None],
        on_config: Callable[[bytes], None] | None = None,
        on_connected: Callable[[], None] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.cfg = cfg
        self.boot_id = boot_id
        self.metrics = metrics
        self.on_ack = on_ack
        self.on_config = on_config
        self.on_connected = on_connected
        self.progress = progress or Progress(cfg.supervision.stall_s)
        gw = cfg.gateway_id
        self.up_topic = up_topic(gw)
        self.up_events_topic = up_topic(gw, events=True)
        self.state_topic = state_topic(gw)
        self._ack_topic = ack_topic(gw)
        self._config_topic = config_topic(gw)
        self.ready = threading.Event()  # connected and subscribed
        self.generation = 0  # +1 per successful connection
        self.connected_since_ms: int | None = None
        self.last_ack_ms: int | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._connacked = False
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw, protocol=mqtt.MQTTv5)
        configure(c, cfg.uplink)
        c.connect_timeout = cfg.uplink.connect_timeout_s
        ob = cfg.outbox
        # Our window bounds what we hand to paho; this only guards against a bug of ours.
        c.max_queued_messages_set(
            ob.window // ob.batch_max + ob.events_window + ob.window // 10 + 100
        )
        c.max_inflight_messages_set(50)
        c.will_set(
            self.state_topic, json.dumps({"online": False, "boot": boot_id}), qos=1, retain=True
        )
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        # Every write on this link's own thread: paho writes a packet queued from another thread
        # (the sender's batches) at once on that thread otherwise, and two writers can interleave
        # a partly written batch with a PUBACK. With this no-op paho queues it and wakes us.
        c.on_socket_register_write = lambda *_: None
        self.client = c
        self._connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._connect_props.MaximumPacketSize = cfg.uplink.max_packet_bytes
        self._thread = threading.Thread(target=self._loop, name=f"gw-{gw}-uplink", daemon=True)

    # ---- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Say offline (a clean stop does not fire the Last Will), disconnect, join."""
        if self.ready.is_set():
            info = self.client.publish(
                self.state_topic, json.dumps({"online": False, "boot": self.boot_id}), 1, True
            )
            deadline = time.monotonic() + 2
            while not info.is_published() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.closing = True  # the disconnection that follows is ours: not a warning
        self.client.disconnect()  # queued; this link's thread writes it, then sees the stop
        self._stop.set()
        self._thread.join(10)

    def _delays(self) -> Iterator[float]:
        up = self.cfg.uplink
        return reconnect_delays(
            up.backoff_base_s, up.fast_backoff_cap_s, up.fast_backoff_for_s, up.backoff_cap_s
        )

    def _loop(self) -> None:
        addr = self.cfg.uplink.address()
        up = self.cfg.uplink
        restarts = Restarts(
            "uplink",
            self.progress,
            self.metrics.thread_errors.labels("uplink").inc,
            max_errors=self.cfg.supervision.max_errors,
        )
        delays = self._delays()
        beat = self.progress.beat
        while not self._stop.is_set() and not self.progress.failed:
            beat("uplink")
            try:
                self.client.connect(
                    addr.host,
                    addr.port,
                    keepalive=up.keepalive_s,
                    clean_start=True,
                    properties=self._connect_props,
                )
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                while not self._stop.is_set() and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = self.client.loop(timeout=0.2)
                    beat("uplink")
                if self._stop.is_set():
                    finish(self.client)  # write the DISCONNECT, close the socket
                    break
                self._lost(f"network loop ended ({rc.name})")
            except (OSError, ValueError) as exc:
                self.last_error = str(exc)
                log.warning("uplink %s unreachable: %s", addr, exc)
                self._lost(str(exc))
            except Exception as exc:  # a bug in paho or ours: count it, connect again
                self._lost(f"{type(exc).__name__}: {exc}")
                if not restarts.allow(exc):
                    return
                with contextlib.suppress(Exception):
                    self.client.disconnect()
            if self._connacked:  # a new outage
                delays = self._delays()
                self._connacked = False
            delay = next(delays)
            log.info("uplink: next attempt in %.1f s", delay)
            until = time.monotonic() + delay
            while not self._stop.wait(min(1.0, max(0.0, until - time.monotonic()))):
                beat("uplink")  # waiting to reconnect is progress too
                if time.monotonic() >= until:
                    break
        finish(self.client, 0.0)  # whatever way the loop ended: nothing left open

    # ---- paho callbacks (this thread) -----------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            self.last_error = f"refused: {rc}"
            log.error("uplink broker refused the connection: %s", rc)
            return
        self._connacked = True
        sock = client.socket()
        if isinstance(sock, socket.socket):  # (TLS included; not a websocket wrapper)
            # An alarm is a small packet: out at once, not held back by Nagle's algorithm
            # until the broker acknowledges the telemetry sent before it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("connected to the uplink broker %s", self.cfg.uplink.address())
        topics = [(self._ack_topic, 1)]
        if self.on_config is not None:
            topics.append((self._config_topic, 1))
        client.subscribe(topics)
        healthy = self.progress.healthy()  # a new connection does not make a stalled part well
        state = self.state(online=healthy, stalled=None if healthy else self.progress.stalled())
        client.publish(self.state_topic, state, qos=1, retain=True)

    def _on_subscribe(self, *_: Any) -> None:
        self.generation += 1
        self.connected_since_ms = time.time_ns() // 1_000_000
        self.last_error = None
        self.metrics.reconnects.inc()
        self.metrics.uplink_connected.set(1)
        self.ready.set()
        if self.on_connected is not None:
            self.on_connected()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._lost(str(rc))

    def _lost(self, why: str) -> None:
        if self.ready.is_set():
            level = logging.INFO if getattr(self, "closing", False) else logging.WARNING
            log.log(level, "uplink disconnected (%s); records stay in the outbox", why)
        self.ready.clear()
        self.connected_since_ms = None
        self.metrics.uplink_connected.set(0)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Never raises (an exception here would end the network loop): counted, dropped."""
        try:
            self._handle(msg)
        except Exception:
            self.metrics.thread_errors.labels("uplink").inc()
            log.exception("uplink: handling a message on %r failed", msg.topic)

    def _handle(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self._ack_topic:
            try:
                seqs = parse_ack(bytes(msg.payload))
            except InputError as exc:
                self.metrics.rejected.labels("bad_ack").inc()
                log.warning("ignored a malformed confirmation on %s: %s", msg.topic, exc)
                return
            self.last_ack_ms = time.time_ns() // 1_000_000
            self.on_ack(seqs)
        elif msg.topic == self._config_topic and self.on_config is not None and msg.payload:
            self.on_config(bytes(msg.payload))

    # ---- for the sender -------------------------------------------------------------------

    def state(self, *, online: bool, stalled: list[str] | None = None) -> str:
        """The retained state: ``online`` only while every part makes progress; when one does
        not, ``healthy: false`` and the parts that are ``stalled``."""
        doc: dict[str, Any] = {
            "online": online,
            "boot": self.boot_id,
            "ts": time.time_ns() // 1_000_000,
            "config_version": self.cfg.config_version,
        }
        if stalled:
            doc["healthy"] = False
            doc["stalled"] = stalled
        return json.dumps(doc)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> bool:
        """Hand one message to paho (QoS 1); False when it was not taken."""
        if not self.ready.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_batch(self, payload: bytes, events_only: bool = False) -> bool:
        return self.publish(self.up_events_topic if events_only else self.up_topic, payload)
