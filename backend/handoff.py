"""Records handed to the worker that owns their partition (several active workers, issue 11;
``backend.partitions``; docs/scaling.md, "Several active workers").

A worker stores what the broker gives it, whichever gateway it comes from. The committed
records of communities whose partition another worker owns are written here, one row per
partition and flush, with a ``NOTIFY`` on the group's channel, *before* the gateway is
acknowledged: a worker killed between its commit and this insert has not acknowledged, so the
gateway sends the records again, and the duplicate is handed over then (an event as a repeat,
a reading if it was never evaluated). The owner takes the rows in order and deletes them in
the transaction that stores the rule state of their evaluation (``StateWriter``), so a row is
evaluated exactly once across owner kills; rows of a partition without an owner wait for the
worker that takes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncCursor
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from anju.uplink import Record
from backend.db.retry import until_done

log = logging.getLogger("anju.ingest")

_FIELDS = tuple(f.name for f in dataclasses.fields(Record))


def channel(group: str) -> str:
    """The group's notification channel (an identifier, quoted where used; a digest of the
    group's name, since a channel name is at most 63 bytes)."""
    return "anju_handoff_" + hashlib.sha256(group.encode()).hexdigest()[:16]


def to_json(r: Record) -> dict[str, Any]:
    return {f: getattr(r, f) for f in _FIELDS}


def from_json(d: dict[str, Any]) -> Record:
    return Record(**{f: d[f] for f in _FIELDS if f in d})


async def hand_off(
    pool: AsyncConnectionPool[AsyncConnection[Any]], group: str, parts: dict[int, list[Record]]
) -> None:
    """Write the records of each partition for its owner, and wake the owners."""
    if not parts:
        return
    async with pool.connection() as conn, conn.transaction():
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO rules_handoff (part, records) VALUES (%s, %s)",
                [(p, Jsonb([to_json(r) for r in recs])) for p, recs in sorted(parts.items())],
            )
        await conn.execute("SELECT pg_notify(%s, '')", (channel(group),))


Split = Callable[[list[Record]], tuple[list[Record], dict[int, list[Record]]]]


async def keep_mine(
    pool: AsyncConnectionPool[AsyncConnection[Any]],
    group: str,
    split: Split,
    records: list[Record],
) -> list[Record]:
    """After a commit: hand the records of other workers' partitions to their owners (retried
    until the database takes them, before anything is acknowledged); the rest, this worker's
    to evaluate."""
    mine, theirs = split(records)
    if theirs:
        await until_done(lambda: hand_off(pool, group, theirs), "hand records over", log)
    return mine


async def take(
    conn: AsyncConnection[Any], parts: Sequence[int], limit: int = 100
) -> list[tuple[int, list[Record]]]:
    """The oldest rows of these partitions (not deleted: see ``forget``)."""
    cur = await conn.execute(
        "SELECT id, records FROM rules_handoff WHERE part = ANY(%s::int[]) ORDER BY id LIMIT %s",
        (list(parts), limit),
    )
    return [(int(i), [from_json(d) for d in recs]) for i, recs in await cur.fetchall()]


async def forget(cur: AsyncCursor[Any], ids: Sequence[int]) -> None:
    """Delete evaluated rows (in the transaction that stores their rule state)."""
    if ids:
        await cur.execute("DELETE FROM rules_handoff WHERE id = ANY(%s::int8[])", (list(ids),))
