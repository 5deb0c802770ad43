"""Credentials and TLS for a paho client, from a link's configuration; a clean end."""

from __future__ import annotations

import contextlib
import time

import paho.mqtt.client as mqtt

from gateway.config import LinkConfig


def configure(client: mqtt.Client, cfg: LinkConfig) -> None:
    """Per-gateway credentials (file or URL) and TLS for ``mqtts://`` addresses."""
    addr = cfg.address()
    user = cfg.username or addr.username
    if user:
        client.username_pw_set(user, cfg.password or addr.password)
    if addr.tls:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.key_file) if cfg.key_file else None,
        )


def finish(client: mqtt.Client, within_s: float = 1.0) -> None:
    """On the link's own thread, at its stop: write the queued DISCONNECT (paho then closes
    the socket), within ``within_s``; then close whatever paho still holds open."""
    deadline = time.monotonic() + within_s
    while client.socket() is not None and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    # paho closes its socket pair (which wakes its loop) only in its own loop_forever; ours is
    # our own loop, so close it (and a socket still open) here, or they linger until the GC.
    reset = getattr(client, "_reset_sockets", None)
    if callable(reset):
        with contextlib.suppress(OSError):
            reset()
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
