"""Connecting to the brokers of ``anju demo`` with the credentials its endpoints line prints
(``mqtts://user:password@127.0.0.1:P`` with ``ca_file``; ``mqtt://`` for the LAN brokers)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from anju.mqtturl import parse_mqtt_url


def aiomqtt_client(url: str, ca_file: str | Path | None, **kw: Any) -> aiomqtt.Client:
    addr = parse_mqtt_url(url)
    tls = ssl.create_default_context(cafile=str(ca_file)) if addr.tls and ca_file else None
    return aiomqtt.Client(
        addr.host,
        addr.port,
        username=addr.username,
        password=addr.password,
        tls_context=tls,
        **kw,
    )


def paho_client(url: str, ca_file: str | Path | None, client_id: str = "") -> mqtt.Client:
    """A paho client set up (not connected) as ``mosquitto_sub -L URL --cafile CA`` would be."""
    addr = parse_mqtt_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    if addr.username:
        c.username_pw_set(addr.username, addr.password)
    if addr.tls:
        c.tls_set(ca_certs=str(ca_file) if ca_file else None)
    return c
