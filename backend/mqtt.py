"""The backend's MQTT connections to the uplink broker: TLS for ``mqtts://`` (the city's CA,
optionally a client certificate), never a password in clear over the network (settings refuse
it), and one broker user per session: with ``use_username_as_clientid`` (deploy/, ``anju
provision``) the client id is the user name, so the alarm lane's session ``<client_id>-events``
logs in as ``<user>-events`` (provisioned with the worker's password)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt

from anju.backoff import backoff
from anju.mqtturl import MqttUrl, check_password_transport, parse_mqtt_url
from backend.config import BackendSettings

log = logging.getLogger("anju.mqtt")

# Small packets (alerts, acks, PUBACKs) go out at once, not held back by Nagle's algorithm.
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def tls_context(settings: BackendSettings) -> ssl.SSLContext:
    """Verify the broker against ``mqtt_ca_file`` (the system's CAs when unset), host name
    included; present ``mqtt_cert_file``/``mqtt_key_file`` when given."""
    ca = str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.mqtt_cert_file is not None:
        key = str(settings.mqtt_key_file) if settings.mqtt_key_file else None
        ctx.load_cert_chain(str(settings.mqtt_cert_file), key)
    return ctx


def session_username(addr: MqttUrl, settings: BackendSettings, identifier: str) -> str | None:
    """The user of session ``identifier``: the URL's user, with the suffix that tells the
    session from the main one (``anju-backend-events`` for ``-events``)."""
    if addr.username is None:
        return None
    return addr.username + identifier.removeprefix(settings.client_id)


def uplink_client(settings: BackendSettings, identifier: str) -> aiomqtt.Client:
    """A persistent session (``identifier``) on the uplink broker, with a bounded incoming
    queue: beyond it aiomqtt discards (and logs), and a discarded batch, unconfirmed, is sent
    again by its gateway."""
    addr = parse_mqtt_url(settings.mqtt_url)
    check_password_transport(addr, allow_plain=settings.mqtt_allow_plain_password)
    return aiomqtt.Client(
        addr.host,
        addr.port,
        username=session_username(addr, settings, identifier),
        password=addr.password,
        identifier=identifier,
        # Persistent: what comes while it reconnects waits for it. Several workers
        # (worker_group) use one identity, so the next leader resumes the dead one's session.
        # Several active workers (shared) each have their own and a clean one: what the broker
        # gave a worker that died, unacknowledged, its gateways send again to the others.
        clean_session=settings.shared,
        keepalive=30,
        socket_options=NODELAY,
        max_queued_incoming_messages=settings.mqtt_incoming_max,
        tls_context=tls_context(settings) if addr.tls else None,
    )


async def keep_session(
    settings: BackendSettings,
    identifier: str,
    topics: Sequence[str],
    serve: Callable[[aiomqtt.Client], Awaitable[None]],
    *,
    on_up: Callable[[aiomqtt.Client], None],
    on_down: Callable[[], None],
    what: str,
) -> None:
    """Session ``identifier`` (``uplink_client``), forever: connect, subscribe to ``topics``
    (QoS 1), ``on_up(client)``, then ``serve(client)`` until the connection is lost;
    ``on_down()`` and again after a backoff (0.5 s doubling to 10 s, from the start again once
    subscribed). Used by the main session and the alarm lane's; cancel to end it (``on_down()``
    is called then too, and the cancellation goes on)."""
    addr = parse_mqtt_url(settings.mqtt_url)
    delays = backoff(0.5, 10.0)
    while True:
        try:
            try:
                async with uplink_client(settings, identifier) as client:
                    for topic in topics:
                        await client.subscribe(topic, qos=1)
                    on_up(client)
                    log.info("%s connected to the broker %s", what, addr)
                    delays = backoff(0.5, 10.0)
                    await serve(client)
            except BaseException:
                # However the session ends (lost, cancelled, failed), whoever tracks its
                # state (readiness, metrics) hears of it; what ended it goes on.
                on_down()
                raise
        except* aiomqtt.MqttError as eg:
            delay = next(delays)
            log.warning("%s connection lost (%s); again in %.1f s", what, eg.exceptions[0], delay)
            await asyncio.sleep(delay)
