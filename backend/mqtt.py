"""The backend's MQTT connections to the uplink broker."""

from __future__ import annotations

import socket

import aiomqtt

from anju.mqtturl import parse_mqtt_url
from backend.config import BackendSettings

# Small packets (alerts, acks, PUBACKs) go out at once, not held back by Nagle's algorithm.
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def uplink_client(settings: BackendSettings, identifier: str) -> aiomqtt.Client:
    """A persistent session (``identifier``) on the uplink broker, with a bounded incoming
    queue: beyond it aiomqtt discards (and logs), and a discarded batch, unconfirmed, is sent
    again by its gateway."""
    addr = parse_mqtt_url(settings.mqtt_url)
    return aiomqtt.Client(
        addr.host,
        addr.port,
        username=addr.username,
        password=addr.password,
        identifier=identifier,
        clean_session=False,
        keepalive=30,
        socket_options=NODELAY,
        max_queued_incoming_messages=settings.mqtt_incoming_max,
    )
