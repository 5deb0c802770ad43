"""Alert persistence: the ``alerts`` table, and the hash-chained ``alert_audit`` log.

Every change is written in one transaction: the alert's row and an audit entry whose hash
covers the previous entry's hash, so that an edited or deleted entry breaks the chain
(``verify_audit``; the hash rules and the verification are in ``backend.audit``). The audit
entry doubles as the delivery outbox: ``published`` stays false until every audience's broker
has acknowledged it, and unpublished entries are sent again after a restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from anju.contract import AlertState, Audience, Severity
from anju.registry import CityIndex, DeviceInfo
from backend.alerting.lifecycle import Alert, Change, parse_rfc3339
from backend.alerting.storm import pseudo_device
from backend.audit import GENESIS, V2, Anchor, ChainReport, v2_text, verify_async
from backend.audit_anchor import anchors_for

_AUDIT_LOCK = 0x61756474  # "audt": one writer extends the chain at a time

# The audit entry, hashed by the database by rule v2 (``backend.audit``) from the values it
# stores: n from the sequence, the row's columns, and the previous entry's hash.
_INSERT_AUDIT = (
    "INSERT INTO alert_audit (n, alert_id, at, action, actor, entry, prev_hash, hash, hash_v)"
    " SELECT n, alert_id, at, action, actor, entry, prev, encode(sha256(convert_to(prev || "
    + v2_text("n", "alert_id", "at", "action", "actor", "entry")
    + f", 'UTF8')), 'hex'), {V2}"
    " FROM (SELECT nextval('alert_audit_n_seq') AS n, %s::uuid AS alert_id,"
    " %s::timestamptz AS at, %s::text AS action, %s::text AS actor, %s::jsonb AS entry,"
    " coalesce((SELECT hash FROM alert_audit ORDER BY n DESC LIMIT 1), %s) AS prev) AS x"
    " RETURNING n"
)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Pending:
    """An audit entry whose alert payload is still to be published."""

    n: int
    payload: dict[str, Any]


class AlertStore:
    def __init__(self, pool: AsyncConnectionPool, *, anchor_file: Path | None = None) -> None:
        self.pool = pool
        self.anchor_file = anchor_file  # the audit chain's anchors (backend.audit_anchor)

    async def save(self, change: Change, now_ms: int) -> Pending:
        """Store a change (its row and payload as they were when it was made: the alert may
        have changed since) with its audit entry."""
        a, p, row = change.alert, change.payload, change.row
        entry = {
            "alert_id": a.id,
            "at": _dt(now_ms).isoformat(),
            "action": change.action,
            "actor": change.actor,
            "payload": p,
        }
        # One round trip (pipeline mode): the chain's lock, the alert's row, and the audit
        # entry whose hash the database computes (rule v2 of ``backend.audit``: over the
        # stored values, not Python's text), then the commit. On an alarm's path every round
        # trip also waits for its turn on a busy event loop.
        async with self.pool.connection() as conn, conn.pipeline():
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))
                await conn.execute(
                    "INSERT INTO alerts (id, type, device_id, community_id, district, severity,"
                    " state, occurred_at, raised_at, updated_at, resolved_at, payload)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
                    " severity = excluded.severity, updated_at = excluded.updated_at,"
                    " resolved_at = excluded.resolved_at, payload = excluded.payload",
                    (
                        a.id,
                        a.type,
                        a.device.id,
                        a.device.community_id,
                        a.device.district,
                        row.severity,
                        row.state,
                        _dt(row.occurred_at),
                        _dt(row.raised_at),
                        _dt(row.updated_at),
                        _dt(row.resolved_at) if row.resolved_at else None,
                        Jsonb(p),
                    ),
                )
                cur = await conn.execute(
                    _INSERT_AUDIT,
                    (
                        a.id,
                        _dt(now_ms),
                        change.action,
                        change.actor,
                        json.dumps(entry, ensure_ascii=False, separators=(",", ":")),
                        GENESIS,
                    ),
                )
            n_row = await cur.fetchone()
        assert n_row is not None
        return Pending(int(n_row[0]), p)

    async def mark_published(self, ns: list[int]) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE alert_audit SET published = true WHERE n = ANY(%s::int8[])", (ns,)
            )

    async def unpublished(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        limit: int | None = None,
        communities: Sequence[str] | None = None,
    ) -> list[Pending]:
        """Audit entries not yet published, in order: those numbered above ``after`` and at
        most ``upto``, the first ``limit`` of them; only of ``communities`` if given (a
        worker's partitions)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT n, entry FROM alert_audit WHERE NOT published AND n > %s"
                " AND (%s::int8 IS NULL OR n <= %s::int8)"
                " AND (%s::text[] IS NULL"
                " OR entry->'payload'->>'community_id' = ANY(%s::text[]))"
                " ORDER BY n LIMIT %s",
                (after, upto, upto, communities, communities, limit),
            )
            return [Pending(int(n), e["payload"]) for n, e in await cur.fetchall()]

    async def unpublished_extent(self, communities: Sequence[str] | None = None) -> tuple[int, int]:
        """How many audit entries are not yet published, and the highest number among them
        (0 if none); only of ``communities`` if given."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), coalesce(max(n), 0) FROM alert_audit WHERE NOT published"
                " AND (%s::text[] IS NULL"
                " OR entry->'payload'->>'community_id' = ANY(%s::text[]))",
                (communities, communities),
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def load_open(
        self, city: CityIndex, communities: Sequence[str] | None = None
    ) -> list[Alert]:
        """Open alerts, to carry on after a restart (alerts of devices no longer in the
        registry are left as they are); only those of ``communities`` if given (a worker's
        partitions). Storm summaries and gateway alerts are on pseudo devices (the community,
        the gateway)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT payload FROM alerts WHERE state <> 'resolved'"
                " AND (%s::text[] IS NULL OR payload->>'community_id' = ANY(%s::text[]))",
                (communities, communities),
            )
            rows = await cur.fetchall()
        out = []
        for (p,) in rows:
            kind = p["device_kind"]
            dev: DeviceInfo | None
            if kind in ("community", "gateway"):
                known = city.communities if kind == "community" else city.gateway_community
                dev = pseudo_device(city, kind, p["device_id"]) if p["device_id"] in known else None
            else:
                dev = city.devices.get(p["device_id"])
            if dev is None:
                continue
            out.append(
                Alert(
                    id=p["id"],
                    type=p["type"],
                    severity=Severity(p["severity"]),
                    state=AlertState(p["state"]),
                    title=p["title"],
                    device=dev,
                    occurred_at=parse_rfc3339(p["occurred_at"]),
                    raised_at=parse_rfc3339(p["raised_at"]),
                    updated_at=parse_rfc3339(p["updated_at"]),
                    evidence=dict(p["evidence"]),
                    audiences=[(Audience(x["audience"]), x["scope"]) for x in p["audiences"]],
                    acks=list(p["acks"]),
                )
            )
        return out

    async def save_states(
        self,
        docs: dict[str, str],
        also: Callable[[AsyncConnection[Any]], Awaitable[None]] | None = None,
    ) -> None:
        """Upsert rule-state snapshots, given as JSON text by key, in one statement. They
        travel as one JSON object (a text parameter: no per-element array escaping).
        ``also`` runs in the same transaction (the marks of what was evaluated)."""
        if not docs and also is None:
            return
        body = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in docs.items()) + "}"
        async with self.pool.connection() as conn, conn.transaction():
            if docs:
                await conn.execute(
                    "INSERT INTO alert_rule_state (key, doc, updated_at)"
                    " SELECT key, value, now() FROM jsonb_each(%s::jsonb)"
                    " ON CONFLICT (key) DO UPDATE SET doc = excluded.doc, updated_at = now()",
                    (body,),
                )
            if also is not None:
                await also(conn)

    async def load_states(self, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Rule states by key; only ``keys`` if given."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT key, doc FROM alert_rule_state"
                " WHERE %s::text[] IS NULL OR key = ANY(%s::text[])",
                (keys, keys),
            )
            return {k: d for k, d in await cur.fetchall()}

    async def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT payload FROM alerts WHERE id = %s", (alert_id,))
            row = await cur.fetchone()
        return None if row is None else dict(row[0])

    async def audit_of(self, alert_id: str) -> list[dict[str, Any]]:
        """The audit entries of one alert, oldest first, with their hashes and hash rules."""
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(
                "SELECT n, at, action, actor, entry, prev_hash, hash, hash_v FROM alert_audit"
                " WHERE alert_id = %s ORDER BY n",
                (alert_id,),
            )
            rows = await cur.fetchall()
        return [{**r, "at": r["at"].isoformat()} for r in rows]

    async def list_alerts(
        self,
        *,
        open_only: bool = False,
        community_id: str | None = None,
        limit: int = 100,
        audience: tuple[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts, newest first; ``audience`` (audience, scope) keeps those sent to it."""
        q = "SELECT payload FROM alerts WHERE true"
        args: list[Any] = []
        if audience is not None:
            q += " AND payload -> 'audiences' @> %s"
            args.append(Jsonb([{"audience": audience[0], "scope": audience[1]}]))
        if open_only:
            q += " AND state <> 'resolved'"
        if community_id:
            q += " AND community_id = %s"
            args.append(community_id)
        q += " ORDER BY raised_at DESC LIMIT %s"
        args.append(limit)
        async with self.pool.connection() as conn:
            cur = await conn.execute(q.encode(), args)
            return [r[0] for r in await cur.fetchall()]

    async def verify_audit(self, anchors: Sequence[Anchor] | None = None) -> ChainReport:
        """Verify the audit log (``backend.audit``) against ``anchors``, by default those of
        ``anchor_file``; every problem is reported."""
        if anchors is None:
            anchors = await asyncio.to_thread(anchors_for, self.anchor_file)
        async with self.pool.connection() as conn:
            return await verify_async(conn, anchors)
