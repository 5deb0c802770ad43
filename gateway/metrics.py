"""The gateway's Prometheus metrics, on a registry of its own (one per gateway instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter(
            "anju_gateway_accepted", "Items stored in the outbox", ["lane"], registry=r
        )
        self.rejected = Counter(
            "anju_gateway_rejected", "Device input rejected, by reason", ["reason"], registry=r
        )
        self.sent = Counter("anju_gateway_sent_records", "Records published uplink", registry=r)
        self.confirmed = Counter(
            "anju_gateway_confirmed_records", "Records the backend confirmed committed", registry=r
        )
        self.uplink_connected = Gauge(
            "anju_gateway_uplink_connected", "1 while the uplink is connected", registry=r
        )
        self.outbox_depth = Gauge(
            "anju_gateway_outbox_depth", "Records waiting in the outbox", ["lane"], registry=r
        )
