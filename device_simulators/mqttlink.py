"""One MQTT connection to a community's LAN broker, shared by the devices of one gateway.

paho-mqtt runs the network in its own thread and reconnects by itself (capped exponential
backoff); this wrapper only counts what it publishes and drops, republishes the devices'
retained status after every (re)connection, and hands connection news to the caller's thread
through a small bounded buffer (the oldest notes go first when it is full).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from anju.errors import ConfigError
from device_simulators.base import Payload

DEFAULT_PORT = 1883


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` -> (host, port)."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ConfigError(f"{url!r}: expected mqtt://HOST:PORT")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigError(f"{url!r}: bad port") from exc
    return parts.hostname, port


def encode(payload: Payload) -> bytes:
    """Compact UTF-8 JSON; NaN and Infinity are refused (PROTOCOL.md section 1)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class GatewayLink:
    """The simulated devices' connection to one gateway's LAN broker."""

    def __init__(self, gateway_id: str, url: str, *, max_queued: int = 10_000) -> None:
        self.gateway_id = gateway_id
        self.url = url
        self.host, self.port = parse_mqtt_url(url)
        self.notes: deque[str] = deque(maxlen=100)
        self.sent: dict[str, int] = {"telemetry": 0, "event": 0, "status": 0}
        self.dropped: dict[str, int] = {"telemetry": 0, "event": 0, "status": 0}
        self._pending: set[int] = set()  # mids of QoS 1 messages not yet acknowledged
        self._acked: set[int] = set()  # filled by the network thread
        self._acked_lock = threading.Lock()
        self._status_wanted = threading.Event()
        self._connected = threading.Event()
        self._failing = False
        self._closing = False
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"anju-sim-{gateway_id}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        # Credentials in the URL (an installer of the gateway's LAN broker: anju demo).
        user, password = urlsplit(url).username, urlsplit(url).password
        if user:
            self._client.username_pw_set(unquote(user), unquote(password or ""))
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(max_queued)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; failures are retried by paho, never raised."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def take_status_request(self) -> bool:
        """True once after each successful connection: time to (re)publish retained status."""
        if self._status_wanted.is_set():
            self._status_wanted.clear()
            return True
        return False

    def publish(self, topic: str, channel: str, payload: Payload) -> bool:
        """Publish; events and status with QoS 1 (status retained), telemetry with QoS 0.

        QoS 1 messages wait in paho's bounded queue while the broker is away; telemetry sent
        while disconnected, and anything beyond the queue, is dropped and counted.
        """
        qos = 0 if channel == "telemetry" else 1
        info = self._client.publish(topic, encode(payload), qos=qos, retain=channel == "status")
        queued = qos == 1 and info.rc == mqtt.MQTT_ERR_NO_CONN
        if info.rc == mqtt.MQTT_ERR_SUCCESS or queued:
            self.sent[channel] += 1
            if qos == 1:
                self._pending.add(info.mid)
            return True
        self.dropped[channel] += 1
        return False

    def prune(self) -> int:
        """Forget acknowledged messages; return how many are still waiting."""
        with self._acked_lock:
            acked, self._acked = self._acked, set()
        self._pending -= acked
        return len(self._pending)

    def close(self, *, timeout_s: float = 2.0) -> None:
        """Let in-flight QoS 1 messages finish (up to ``timeout_s``), then disconnect."""
        deadline = time.monotonic() + timeout_s
        while self.connected and self.prune() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._pending:
            self.notes.append(
                f"{self.gateway_id}: {len(self._pending)} QoS 1 messages not acknowledged at close"
            )
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks (network thread).

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.notes.append(f"{self.gateway_id}: {self.url} refused us: {reason_code}")
            return
        self._failing = False
        self._connected.set()
        self._status_wanted.set()
        self.notes.append(f"{self.gateway_id}: connected to {self.url}")

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._acked_lock:
            self._acked.add(mid)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._failing:
            self._failing = True
            self.notes.append(f"{self.gateway_id}: cannot connect to {self.url}; retrying")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing:
            self.notes.append(f"{self.gateway_id}: lost {self.url} ({reason_code}); reconnecting")
