"""The MQTT side: each uplink batch decoded, its poison kept as dead letters, and its records
queued by lane (``Ingest.submit``); the two lanes' writers (``Ingest.events``,
``Ingest.telemetry``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from anju.uplink import UplinkDecodeError, decode_parts
from backend.deadletters import DeadLetter
from backend.ingest.events import EventsLane
from backend.ingest.telemetry import TelemetryLane
from backend.ingest.writer import Common, Item, OnCommitted
from backend.metrics import BackendMetrics

log = logging.getLogger("anju.ingest")


class Ingest:
    def __init__(
        self,
        conninfo: str,
        metrics: BackendMetrics,
        *,
        queue_max: int = 2_000,
        batch_max_records: int = 5_000,
        batch_wait_ms: int = 20,
        event_queue_max: int = 1_000,
        event_batch_max_records: int = 500,
        telemetry_wait_ms: int = 500,
        device_gateway: Mapping[str, str] | None = None,
        broken: frozenset[str] = frozenset(),
        shared: bool = False,
    ) -> None:
        """``broken``: guarantees broken on purpose (ANJU_BREAK; test only,
        docs/guarantees.md). ``shared``: other workers write the same gateways' records at
        the same time (several active workers: nothing of the ranges is kept in memory)."""
        common = Common(conninfo, metrics, broken, shared=shared)
        self.metrics = metrics
        self.broken = broken
        # The registry's gateway of each device: a gateway speaks for its own devices only
        # (a device not in the registry is stored, and not evaluated).
        self.device_gateway = device_gateway or {}
        self.telemetry = TelemetryLane(
            common,
            queue_max=queue_max,
            batch_max=batch_max_records,
            wait_s=batch_wait_ms / 1000,
            put_wait_s=telemetry_wait_ms / 1000,
        )
        self.events = EventsLane(
            common, queue_max=event_queue_max, batch_max=event_batch_max_records
        )

    async def submit(self, topic: str, payload: bytes) -> None:
        """Decode one uplink message and queue its records by lane (each lane's overflow
        policy applies), and what it had that cannot be taken as dead letters (telemetry
        lane). Never raises for its content."""
        try:
            decoded = decode_parts(topic, payload)
        except UplinkDecodeError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            log.warning("rejected an uplink batch on %r: %s", topic[:200], exc)
            await self.telemetry.put([DeadLetter.of_batch(topic, exc.reason, exc.detail, payload)])
            return
        self.metrics.batches.inc()
        gw = decoded.gateway_id
        dead = [DeadLetter.of_rejected(topic, gw, r) for r in decoded.rejected]
        records = decoded.records
        if self.device_gateway:
            mine = self.device_gateway
            foreign = [r for r in records if mine.get(r.device_id, gw) != gw]
            if foreign:
                records = [r for r in records if mine.get(r.device_id, gw) == gw]
                for r in foreign:
                    detail = f"{r.device_id} belongs to {mine[r.device_id]}, not {gw}"
                    dead.append(DeadLetter.of_record(topic, "foreign_device", detail, r))
        for d in dead:
            self.metrics.rejected.labels(d.reason).inc()
            log.warning(
                "rejected record %s/%s/%s on %s: %s: %s",
                gw,
                d.boot_id,
                d.seq,
                topic,
                d.reason,
                d.detail[:200],
            )
        tele: list[Item] = [r for r in records if r.kind == "t"]
        fast: list[Item] = (
            [r for r in records if r.kind != "t"] if len(tele) != len(records) else []
        )
        if "no_event_priority" in self.broken:  # ANJU_BREAK (test only): behind telemetry
            tele, fast = [*tele, *fast], []
        if fast:
            await self.events.put(fast)
        tele.extend(dead)
        await self.telemetry.put(tele)

    async def run(self, on_committed: OnCommitted) -> None:
        """The two lanes' writers on this loop, until cancelled (the backend runs the events
        lane's on the alarm lane's loop instead)."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.events.run(on_committed), name="ingest-events")
            tg.create_task(self.telemetry.run(on_committed), name="ingest-telemetry")
