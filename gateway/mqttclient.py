"""Credentials and TLS for a paho client, from a link's configuration."""

from __future__ import annotations

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
