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
        self.dropped = Counter(
            "anju_gateway_dropped",
            "Records deleted unsent to keep the outbox within its disk budget",
            ["lane"],
            registry=r,
        )
        self.time_flagged = Counter(
            "anju_gateway_time_flagged",
            "Records whose time was replaced or could not be verified, by flag",
            ["flag"],
            registry=r,
        )
        self.restamped = Counter(
            "anju_gateway_restamped", "Records re-timed once the clock was set", registry=r
        )
        self.lan_duplicates = Counter(
            "anju_gateway_lan_duplicates", "Redelivered LAN messages already stored", registry=r
        )
        self.store_errors = Counter(
            "anju_gateway_store_errors", "Outbox commits retried after an error", registry=r
        )
        self.sent = Counter("anju_gateway_sent_records", "Records published uplink", registry=r)
        self.resent = Counter(
            "anju_gateway_resent_records", "Records published again after a timeout", registry=r
        )
        self.confirmed = Counter(
            "anju_gateway_confirmed_records", "Records the backend confirmed committed", registry=r
        )
        self.uplink_bytes = Counter(
            "anju_gateway_uplink_bytes", "Batch bytes published (after compression)", registry=r
        )
        self.reconnects = Counter(
            "anju_gateway_uplink_connects", "Successful uplink connections", registry=r
        )
        self.uplink_connected = Gauge(
            "anju_gateway_uplink_connected", "1 while the uplink is connected", registry=r
        )
        self.outbox_depth = Gauge(
            "anju_gateway_outbox_depth", "Records waiting in the outbox", ["lane"], registry=r
        )
        self.inflight = Gauge(
            "anju_gateway_inflight_records", "Records sent and not yet confirmed", registry=r
        )
        self.oldest_age = Gauge(
            "anju_gateway_oldest_record_age_seconds",
            "Age of the oldest unconfirmed record",
            registry=r,
        )
        self.clock_trusted = Gauge(
            "anju_gateway_clock_trusted", "1 when the wall clock is trusted", registry=r
        )
        self.config_version = Gauge(
            "anju_gateway_config_version", "Version of the running configuration", registry=r
        )
        self.dropped_events = Counter(
            "anju_gateway_dropped_events",
            "Events deleted unsent: the device held more than its share (its oldest go)",
            ["device"],  # bounded: the gateway's configured devices
            registry=r,
        )
        self.thread_errors = Counter(
            "anju_gateway_thread_errors",
            "Unexpected exceptions a gateway thread recovered from (or died of), by thread",
            ["thread"],
            registry=r,
        )
        self.healthy = Gauge(
            "anju_gateway_healthy",
            "1 while intake, commit, send and the uplink thread all make progress",
            registry=r,
        )
        self.config_results = Counter(
            "anju_gateway_remote_config",
            "Remote configurations, by result",
            ["result"],
            registry=r,
        )
