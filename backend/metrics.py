"""The backend's Prometheus metrics, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class BackendMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.batches = Counter("anju_ingest_batches", "Uplink batches received", registry=r)
        self.records = Counter(
            "anju_ingest_records", "Records committed, by kind", ["kind"], registry=r
        )
        self.readings = Counter(
            "anju_ingest_readings", "Readings (metric values) committed", registry=r
        )
        self.flushes = Counter(
            "anju_ingest_flushes", "Database transactions committed, by lane", ["lane"], registry=r
        )
        self.duplicates = Counter(
            "anju_ingest_duplicates", "Redelivered records dropped", registry=r
        )
        self.rejected = Counter(
            "anju_ingest_rejected",
            "Uplink batches and records rejected (kept in dead_letters), by reason",
            ["reason"],
            registry=r,
        )
        self.shed = Counter(
            "anju_ingest_shed",
            "Uplink batches' records not queued because the lane's queue stayed full (not"
            " acknowledged: the gateway sends them again), by lane",
            ["lane"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "anju_ingest_commit_seconds",
            "Time to write and commit one flush, by lane",
            ["lane"],
            buckets=_FAST,
            registry=r,
        )
        self.copy_seconds = Histogram(
            "anju_ingest_copy_seconds",
            "Time spent in COPY within a flush, by lane",
            ["lane"],
            buckets=_FAST,
            registry=r,
        )
        self.db_errors = Counter(
            "anju_ingest_db_errors", "Flushes retried after a database error", registry=r
        )
        self.lag = Gauge(
            "anju_ingest_lag_seconds",
            "Now minus the newest device time in the last telemetry commit",
            registry=r,
        )
        self.gaps = Counter(
            "anju_ingest_gaps",
            "Holes opened in a (gateway, boot)'s sequence numbers (a number above the highest"
            " committed plus one; may fill later)",
            registry=r,
        )
        self.seq_missing = Gauge(
            "anju_ingest_seq_missing",
            "Sequence numbers below the highest committed, per (gateway, boot), not committed",
            registry=r,
        )
        self.alert_changes = Counter(
            "anju_alert_changes", "Alert changes, by action", ["action"], registry=r
        )
        self.late_events = Counter(
            "anju_rules_late_events",
            "Paired events (a panel's fire, its reset) that arrived after a later one they pair"
            " with, evaluated as if in order (docs/alerts.md, 'Late events')",
            registry=r,
        )
        self.alert_store_refused = Counter(
            "anju_alert_store_refused",
            "Alert changes the database refused for their content (not published; see the log)",
            registry=r,
        )
        self.alert_state_refused = Counter(
            "anju_alert_state_refused",
            "Rule states the database refused even in canonical form (left out; see the log)",
            registry=r,
        )
        self.task_errors = Counter(
            "anju_backend_task_errors",
            "Exceptions in the backend's long-lived tasks, by task (recovered, or the process"
            " stopped to be restarted)",
            ["task"],
            registry=r,
        )
        self.alert_latency = Histogram(
            "anju_alert_latency_seconds",
            "Gateway receive time to alert published",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.mqtt_connected = Gauge("anju_mqtt_connected", "1 while connected", registry=r)
        self.loop_lag = Histogram(
            "anju_loop_lag_seconds",
            "How late the event loop ran a task due now (what every step of an alarm's path"
            " may wait for)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1),
            registry=r,
        )
        # Every in-memory queue of the backend (issue 11): its depth, its bound, and how often
        # its overflow policy acted ("wait": the producer waited for room; "shed": items left
        # out of memory that are safe elsewhere, e.g. in the database, and re-read later).
        self.queue_depth = Gauge(
            "anju_backend_queue_depth", "Items waiting in an in-memory queue", ["queue"], registry=r
        )
        self.queue_capacity = Gauge(
            "anju_backend_queue_capacity", "The bound of an in-memory queue", ["queue"], registry=r
        )
        self.queue_overflow = Counter(
            "anju_backend_queue_overflow",
            "Times a full queue's overflow policy acted, by queue and policy (wait or shed)",
            ["queue", "policy"],
            registry=r,
        )
        # Test only (ANJU_BREAK, docs/guarantees.md): 1 for each guarantee broken on purpose.
        self.broken_guarantee = Gauge(
            "anju_backend_broken_guarantee",
            "1 for each guarantee broken on purpose by ANJU_BREAK (chaos tests only; never in"
            " production)",
            ["name"],
            registry=r,
        )
