"""Dead letters: uplink input the backend rejected, kept for a person to look at.

What lands here (``reason``, also the label of ``anju_ingest_rejected_total``): a batch or
record that has no canonical form (``bad_json``, ``too_deep``, ``bad_number``, ``bad_record``,
``too_large``, ``too_many_records``, ``bad_compression``, ``bad_batch``, ``bad_topic``,
``gateway_mismatch``), a record for a device that the registry gives to another gateway
(``foreign_device``), and a record the database refused (``db_refused``). A row with a
``seq`` was confirmed to its gateway once stored here (the gateway stops sending it); a batch
that cannot be attributed to one of its records is kept without confirming anything.
The same input sent again is counted on its first row (``count``, ``last_at``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg

from anju import canonical
from anju.uplink import Record, Rejected, gateway_of_up_topic

_INSERT = (
    "INSERT INTO dead_letters AS d (digest, reason, detail, topic, gateway_id, boot_id, seq,"
    " device_id, raw) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (digest) DO UPDATE SET count = d.count + 1, last_at = now()"
)
COLUMNS = (
    "id",
    "first_at",
    "last_at",
    "count",
    "reason",
    "detail",
    "topic",
    "gateway_id",
    "boot_id",
    "seq",
    "device_id",
    "raw",
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected input; every text already in canonical form (storable as it is)."""

    reason: str
    detail: str
    topic: str
    raw: str
    gateway_id: str | None = None
    boot_id: str | None = None
    seq: int | None = None
    device_id: str | None = None

    @classmethod
    def make(
        cls,
        reason: str,
        detail: str,
        topic: str,
        raw: str,
        *,
        gateway_id: str | None = None,
        boot_id: str | None = None,
        seq: int | None = None,
        device_id: str | None = None,
    ) -> DeadLetter:
        c = canonical.clean_str
        return cls(
            c(reason[:64]),
            c(detail[:500]),
            c(topic[:300]),
            c(raw[:16384]),
            gateway_id,
            c(boot_id) if boot_id is not None else None,
            seq,
            c(device_id) if device_id is not None else None,
        )

    @classmethod
    def of_batch(cls, topic: str, reason: str, detail: str, payload: bytes) -> DeadLetter:
        raw = payload[:65536].decode("utf-8", "replace")
        return cls.make(reason, detail, topic, raw, gateway_id=gateway_of_up_topic(topic))

    @classmethod
    def of_rejected(cls, topic: str, gateway_id: str, r: Rejected) -> DeadLetter:
        return cls.make(
            r.reason, r.detail, topic, r.raw, gateway_id=gateway_id, boot_id=r.boot_id, seq=r.seq
        )

    @classmethod
    def of_record(cls, topic: str, reason: str, detail: str, r: Record) -> DeadLetter:
        doc = {
            "d": r.device_id,
            "k": r.kind,
            "ts": r.ts,
            "rx": r.rx,
            "m": r.metrics,
            "e": r.event_type,
            "x": r.data,
            "s": r.status,
        }
        return cls.make(
            reason,
            detail,
            topic,
            canonical.dumps({k: v for k, v in doc.items() if v is not None}),
            gateway_id=r.gateway_id,
            boot_id=r.boot_id,
            seq=r.seq,
            device_id=r.device_id,
        )

    def digest(self) -> bytes:
        h = hashlib.sha256()
        for part in (self.topic, self.reason, self.boot_id or "", str(self.seq), self.raw):
            h.update(part.encode())
            h.update(b"\x00")
        return h.digest()

    def params(self) -> tuple[Any, ...]:
        return (
            self.digest(),
            self.reason,
            self.detail,
            self.topic,
            self.gateway_id,
            self.boot_id,
            self.seq,
            self.device_id,
            self.raw,
        )


async def store(cur: psycopg.AsyncCursor[Any], letters: list[DeadLetter]) -> None:
    """Insert (or count again) dead letters, in the caller's transaction."""
    if letters:
        await cur.executemany(_INSERT, [d.params() for d in letters])


def listing_query(
    *, gateway_id: str | None, reason: str | None, limit: int
) -> tuple[str, list[Any]]:
    """The newest dead letters first, optionally of one gateway or reason."""
    q = f"SELECT {', '.join(COLUMNS)} FROM dead_letters WHERE true"
    args: list[Any] = []
    if gateway_id:
        q += " AND gateway_id = %s"
        args.append(gateway_id)
    if reason:
        q += " AND reason = %s"
        args.append(reason)
    q += " ORDER BY last_at DESC, id DESC LIMIT %s"
    args.append(limit)
    return q, args


def as_json(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, row, strict=True))
    for k in ("first_at", "last_at"):
        out[k] = out[k].isoformat()
    return out
