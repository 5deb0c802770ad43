"""The backend's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.batches = Counter("anju_ingest_batches", "Uplink batches received", registry=r)
        self.records = Counter(
            "anju_ingest_records", "Records committed, by kind", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "anju_ingest_duplicates", "Redelivered records dropped", registry=r
        )
        self.rejected = Counter(
            "anju_ingest_rejected", "Uplink batches rejected, by reason", ["reason"], registry=r
        )
        self.commit_seconds = Histogram(
            "anju_ingest_commit_seconds", "Time to COPY and commit one flush", registry=r
        )
        self.db_errors = Counter(
            "anju_ingest_db_errors", "Flushes retried after a database error", registry=r
        )
        self.queue_depth = Gauge("anju_ingest_queue_depth", "Batches waiting", registry=r)
        self.alert_changes = Counter(
            "anju_alert_changes", "Alert changes, by action", ["action"], registry=r
        )
        self.alert_latency = Histogram(
            "anju_alert_latency_seconds",
            "Gateway receive time to alert published",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.mqtt_connected = Gauge("anju_mqtt_connected", "1 while connected", registry=r)
