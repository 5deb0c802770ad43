"""The operator's side of remote configuration: publish, retained, and wait for the result."""

from __future__ import annotations

import json
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from anju.mqtturl import parse_mqtt_url
from anju.uplink import config_result_topic, config_topic
from gateway.errors import GatewayError


def push_config(
    url: str, gateway_id: str, version: int, change: dict[str, Any], *, wait_s: float = 60.0
) -> dict[str, Any]:
    """Publish ``{"version", "config"}`` retained for ``gateway_id``; return its result document
    (``{"version", "ok", "error", "ts"}``), or ``{"ok": false, "error": "no answer ..."}``."""
    addr = parse_mqtt_url(url)
    got: dict[str, Any] = {}
    done = threading.Event()
    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if addr.username:
        c.username_pw_set(addr.username, addr.password)
    if addr.tls:
        c.tls_set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("version") == version:
            got.update(doc)
            done.set()

    c.on_message = on_message
    c.on_subscribe = lambda *_: subscribed.set()
    try:
        c.connect(addr.host, addr.port)
    except OSError as exc:
        raise GatewayError(f"cannot reach {addr}: {exc}") from exc
    c.loop_start()
    try:
        c.subscribe(config_result_topic(gateway_id), qos=1)
        subscribed.wait(10)
        payload = json.dumps({"version": version, "config": change}, ensure_ascii=False)
        c.publish(config_topic(gateway_id), payload, qos=1, retain=True).wait_for_publish(10)
        if not done.wait(wait_s):
            return {"version": version, "ok": False, "error": f"no answer within {wait_s:.0f} s"}
        return got
    finally:
        c.disconnect()
        c.loop_stop()
