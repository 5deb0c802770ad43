"""Ingest: uplink batches -> two bounded lanes -> PostgreSQL -> acknowledgements.

Each uplink batch is decoded and split by kind into two lanes (``intake.Ingest.submit``), each
with its own bounded queue, writer and database connection: events and statuses
(``events.EventsLane``: small transactions, never behind telemetry; the backend runs its
writer on the alarm lane's loop) and telemetry (``telemetry.TelemetryLane``: large COPY
transactions, with the dead letters). A lane is a ``writer.LaneWriter``: it gathers what is
queued into a flush, and in one transaction:

1. locks its lane's ``ingest_seen`` rows of the (gateway, boot) pairs in the flush and drops the
   records whose sequence number is already in their ranges (one read per flush, no per-row
   lookup; the events lane knows its ranges in memory);
2. writes the new readings (binary COPY), events, statuses and dead letters;
3. adds the new sequence numbers to the ranges;
4. commits; only then are the records handed on (``on_committed``: the rules) and the gateways
   acknowledged (by whoever runs the writer, once the rules' state is stored).

Overflow policy: each lane's ``put`` (see the lanes). The database going away: the writer keeps
its flush, reconnects and retries with backoff; nothing is acknowledged meanwhile. A flush the
database refuses for its content is split in halves until the refused record is found; that
record is rejected (counted, marked seen and acknowledged, so that it is not sent forever) and
the rest is stored.

Poison input ends (issue 10). Batches are decoded record by record into the canonical form
(``anju.uplink.decode_parts``); a record without one, a record for a device that the registry
gives to another gateway, and a record the database refuses are counted
(``anju_ingest_rejected_total{reason}``) and kept in ``dead_letters`` (``backend.deadletters``)
by the lane's writer, in the same transaction as the flush they came with; those whose sequence
number could be read are acknowledged with it, so the gateway stops sending them. A batch that
cannot be attributed at all is dead-lettered without acknowledging anything.
"""

from backend.ingest.events import EVENTS_WRITER_LOCK, EventsLane
from backend.ingest.intake import Ingest
from backend.ingest.telemetry import TelemetryLane
from backend.ingest.writer import (
    READINGS_COPY,
    READINGS_TYPES,
    EarlyAck,
    Flush,
    LaneWriter,
    OnCommitted,
    mark_evaluated,
)

__all__ = [
    "EVENTS_WRITER_LOCK",
    "READINGS_COPY",
    "READINGS_TYPES",
    "EarlyAck",
    "EventsLane",
    "Flush",
    "Ingest",
    "LaneWriter",
    "OnCommitted",
    "TelemetryLane",
    "mark_evaluated",
]
