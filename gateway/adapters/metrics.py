"""Prometheus metrics of the southbound adapters, on the gateway's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AdapterMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.gbt_frames = Counter(
            "anju_gateway_gbt26875_frames",
            "GB/T 26875.3 frames received, by command",
            ["command"],
            registry=r,
        )
        self.gbt_units = Counter(
            "anju_gateway_gbt26875_units",
            "GB/T 26875.3 data units, by type",
            ["type"],
            registry=r,
        )
        self.gbt_rejected = Counter(
            "anju_gateway_gbt26875_rejected",
            "GB/T 26875.3 input rejected, by reason",
            ["reason"],
            registry=r,
        )
        self.gbt_duplicates = Counter(
            "anju_gateway_gbt26875_duplicates",
            "Repeated frames (same serial) not stored again",
            registry=r,
        )
        self.gbt_replies = Counter(
            "anju_gateway_gbt26875_replies",
            "Frames sent to UITDs, by command",
            ["command"],
            registry=r,
        )
        self.gbt_connections = Gauge(
            "anju_gateway_gbt26875_connections", "UITD connections open", registry=r
        )
        self.modbus_polls = Counter(
            "anju_gateway_modbus_polls", "Modbus polls, by result", ["result"], registry=r
        )
        self.modbus_up = Gauge(
            "anju_gateway_modbus_controller_up",
            "1 while a controller answers",
            ["device"],
            registry=r,
        )
