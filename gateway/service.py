"""The gateway service: LAN broker in, SQLite outbox, uplink to the backend's broker out.

Three threads, each owned by this object and stopped by ``stop``: paho's network loop for the
LAN client, paho's network loop for the uplink client, and the sender loop (``run``) that moves
records from the outbox to the uplink in bounded batches paced by the backend's confirmations.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import start_http_server

from anju.uplink import ack_topic, decode_ack, encode_batch, record_body, state_topic, up_topic
from gateway.config import GatewayConfig, LinkConfig
from gateway.metrics import GatewayMetrics
from gateway.outbox import EVENTS, TELEMETRY, Outbox
from gateway.validate import Accepted, Rejected, decode_device_message

log = logging.getLogger("anju.gateway")

_MAX_REJECT_KEYS = 1_000
_REJECTS_PER_DEVICE = 5


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _client(cfg: LinkConfig, client_id: str, *, v5: bool) -> mqtt.Client:
    addr = cfg.address()
    if v5:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    else:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
    user = cfg.username or addr.username
    if user:
        c.username_pw_set(user, cfg.password or addr.password)
    if addr.tls:
        c.tls_set(ca_certs=str(cfg.ca_file) if cfg.ca_file else None)
    c.reconnect_delay_set(min_delay=1, max_delay=30)
    return c


class Gateway:
    """One community gateway. Call ``run(stop)``; it returns when ``stop`` is set."""

    def __init__(self, cfg: GatewayConfig, *, outbox: Outbox | None = None) -> None:
        self.cfg = cfg
        self.boot_id = str(uuid.uuid4())
        self.metrics = GatewayMetrics()
        self.outbox = outbox or Outbox(cfg.outbox.path)
        self.known = frozenset(cfg.devices)
        self.recent_rejects: OrderedDict[str, deque[tuple[int, str, bytes]]] = OrderedDict()
        self._wake = threading.Event()
        self.lan_ready = threading.Event()  # subscribed to the devices' topics
        self.uplink_ready = threading.Event()  # subscribed to the backend's confirmations
        self._lock = threading.Lock()
        self._inflight: set[int] = set()
        self._up_connected = False
        self._log_budget: dict[str, tuple[int, int]] = {}
        gw = cfg.gateway_id
        self._up_topic = up_topic(gw)
        self._ack_topic = ack_topic(gw)
        self._state_topic = state_topic(gw)

        self.lan = _client(cfg.lan, f"anju-{gw}-lan", v5=False)
        self.lan.on_connect = self._on_lan_connect
        self.lan.on_message = self._on_lan_message
        self.lan.on_subscribe = lambda *_: self.lan_ready.set()

        self.up = _client(cfg.uplink, gw, v5=True)
        self.up.will_set(self._state_topic, json.dumps({"online": False}), qos=1, retain=True)
        self.up.on_connect = self._on_up_connect
        self.up.on_disconnect = self._on_up_disconnect
        self.up.on_message = self._on_up_message
        self.up.on_subscribe = lambda *_: self.uplink_ready.set()

    # ---- LAN side -------------------------------------------------------------------------

    def _on_lan_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any
    ) -> None:
        if rc.is_failure:
            log.error("LAN broker refused the connection: %s", rc)
            return
        log.info("connected to the LAN broker %s", self.cfg.lan.address())
        client.subscribe(
            [(t, 1) for t in ("anju/dev/+/telemetry", "anju/dev/+/event", "anju/dev/+/status")]
        )

    def _on_lan_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # paho sends the PUBACK for a QoS 1 message after this returns: what is accepted here
        # is on disk before the device hears that it was delivered.
        rx = _now_ms()
        payload = bytes(msg.payload)
        items = decode_device_message(msg.topic, payload, known=self.known, rx_ms=rx)
        good: list[tuple[int, str]] = []
        for item in items:
            if isinstance(item, Rejected):
                self._reject(item, payload, rx)
                continue
            assert isinstance(item, Accepted)
            lane = TELEMETRY if item.kind == "t" else EVENTS
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
                    ),
                )
            )
        if not good:
            return
        self.outbox.append(self.boot_id, good, rx)
        for lane, _ in good:
            self.metrics.accepted.labels("events" if lane == EVENTS else "telemetry").inc()
        self._wake.set()

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

    # ---- uplink side ----------------------------------------------------------------------

    def _state(self, online: bool) -> str:
        return json.dumps({"online": online, "boot": self.boot_id, "ts": _now_ms()})

    def _on_up_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any
    ) -> None:
        if rc.is_failure:
            log.error("uplink broker refused the connection: %s", rc)
            return
        log.info("connected to the uplink broker %s", self.cfg.uplink.address())
        client.subscribe(self._ack_topic, qos=1)
        client.publish(self._state_topic, self._state(True), qos=1, retain=True)
        with self._lock:
            self._inflight.clear()
            self._up_connected = True
        self.outbox.unsend_all()
        self.metrics.uplink_connected.set(1)
        self._wake.set()

    def _on_up_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.uplink_ready.clear()
        with self._lock:
            self._up_connected = False
            self._inflight.clear()
        self.metrics.uplink_connected.set(0)
        log.warning("uplink disconnected (%s); records stay in the outbox", rc)

    def _on_up_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            seqs = decode_ack(bytes(msg.payload))
        except ValueError:
            log.warning("ignored a malformed confirmation on %s", msg.topic)
            return
        n = self.outbox.confirm(seqs)
        with self._lock:
            self._inflight.difference_update(seqs)
        self.metrics.confirmed.inc(n)
        self._wake.set()

    def _send_some(self) -> None:
        ob = self.cfg.outbox
        while True:
            with self._lock:
                if not self._up_connected or len(self._inflight) >= ob.window:
                    return
                room = min(ob.batch_max, ob.window - len(self._inflight))
            rows = self.outbox.take(room, _now_ms(), int(ob.resend_after_s * 1000))
            if not rows:
                return
            info = self.up.publish(self._up_topic, encode_batch(self.cfg.gateway_id, rows), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self.outbox.unsend_all()
                return
            with self._lock:
                self._inflight.update(r[0] for r in rows)
            self.metrics.sent.inc(len(rows))

    # ---- life cycle -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        lan, up = self.cfg.lan.address(), self.cfg.uplink.address()
        self.up.connect_async(up.host, up.port, keepalive=self.cfg.uplink.keepalive_s)
        self.lan.connect_async(lan.host, lan.port, keepalive=self.cfg.lan.keepalive_s)
        metrics_server = None
        if self.cfg.metrics_port is not None:
            metrics_server, _thread = start_http_server(
                self.cfg.metrics_port, addr="127.0.0.1", registry=self.metrics.registry
            )
        self.up.loop_start()
        self.lan.loop_start()
        log.info(
            "gateway %s started (boot %s, %d devices)",
            self.cfg.gateway_id,
            self.boot_id,
            len(self.known),
        )
        next_beat = time.monotonic() + self.cfg.heartbeat_s
        try:
            while not stop.is_set():
                self._wake.wait(0.25)
                self._wake.clear()
                self._send_some()
                depth = self.outbox.depth()
                self.metrics.outbox_depth.labels("events").set(depth.events)
                self.metrics.outbox_depth.labels("telemetry").set(depth.telemetry)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.cfg.heartbeat_s
                    if self._up_connected:
                        self.up.publish(self._state_topic, self._state(True), qos=1, retain=True)
        finally:
            self.lan.disconnect()
            self.lan.loop_stop()
            # A clean stop says offline itself: the Last Will only fires on a lost connection.
            if self._up_connected:
                self.up.publish(
                    self._state_topic, json.dumps({"online": False}), qos=1, retain=True
                ).wait_for_publish(2)
            self.up.disconnect()
            self.up.loop_stop()
            self.outbox.close()
            if metrics_server is not None:
                metrics_server.shutdown()
            log.info("gateway %s stopped", self.cfg.gateway_id)
