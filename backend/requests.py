"""People acting on alerts through the API (acknowledge, resolve), whichever worker they ask.

With one worker, or a failover group, the worker that answers the API holds every open alert:
its desk applies the action. With several active workers (``backend.partitions``) an alert
lives on the worker that owns its community's partition; an action asked of another worker is
written to ``alert_requests`` with a ``NOTIFY``, the owner applies it through its desk and
writes the answer, and the asking worker waits for it (``ANSWER_WAIT_S``; longer, and the API
answers 503 with Retry-After: the partition is being taken over).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from anju.contract import Audience
from backend.alerting.errors import AlertNotFound, NotAnAudience
from backend.desk import AlertDesk
from backend.partitions import Partitions

log = logging.getLogger("anju.api")

ANSWER_WAIT_S = 5.0
_POLL_S = 0.05


class NotAnswered(Exception):
    """The owner of the alert's partition did not answer in time (a takeover under way)."""


def channel(group: str) -> str:
    """The group's channel (a digest of its name: a channel name is at most 63 bytes)."""
    return "anju_requests_" + hashlib.sha256(group.encode()).hexdigest()[:16]


class AlertActions:
    """``acknowledge`` and ``resolve`` for the API: the change's payload (or None when the
    audience had acknowledged already); ``AlertNotFound`` / ``NotAnAudience`` as the desk
    raises them; ``NotAnswered`` when forwarded and not answered."""

    def __init__(
        self,
        desk: AlertDesk,
        *,
        pool: AsyncConnectionPool | None = None,
        group: str | None = None,
        partitions: Partitions | None = None,
    ) -> None:
        self.desk = desk
        self.pool = pool
        self.group = group
        self.partitions = partitions

    async def acknowledge(
        self, alert_id: str, audience: Audience, *, by: str, note: str, community: str | None
    ) -> dict[str, Any] | None:
        if self._local(community):
            change = await self.desk.acknowledge(alert_id, audience, by=by, note=note)
            return change.payload if change else None
        request = {"audience": str(audience), "by": by, "note": note}
        return await self._forward(alert_id, "acknowledge", request, community)

    async def resolve(
        self, alert_id: str, *, by: str, note: str, community: str | None
    ) -> dict[str, Any]:
        if self._local(community):
            return (await self.desk.resolve(alert_id, by=by, note=note)).payload
        answer = await self._forward(alert_id, "resolve", {"by": by, "note": note}, community)
        assert answer is not None
        return answer

    def _local(self, community: str | None) -> bool:
        parts = self.partitions
        return parts is None or community is None or parts.owns(community)

    async def _forward(
        self, alert_id: str, action: str, request: dict[str, Any], community: str | None
    ) -> dict[str, Any] | None:
        assert self.pool is not None and self.partitions is not None and self.group is not None
        assert community is not None
        part = self.partitions.of(community)
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO alert_requests (part, alert_id, action, request)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (part, alert_id, action, Jsonb(request)),
                )
                row = await cur.fetchone()
                assert row is not None
                await conn.execute("SELECT pg_notify(%s, '')", (channel(self.group),))
            rid = int(row[0])
            loop = asyncio.get_running_loop()
            until = loop.time() + ANSWER_WAIT_S
            while loop.time() < until:
                cur = await conn.execute(
                    "DELETE FROM alert_requests WHERE id = %s AND answer IS NOT NULL"
                    " RETURNING answer",
                    (rid,),
                )
                got = await cur.fetchone()
                if got is not None:
                    return _answered(alert_id, got[0])  # (the row taken with its answer)
                await asyncio.sleep(_POLL_S)
            # Not answered: withdrawn, unless the owner is applying it (it holds the row: the
            # delete waits for its answer, and then there is one to give).
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{int(ANSWER_WAIT_S)}s'")
                    cur = await conn.execute(
                        "DELETE FROM alert_requests WHERE id = %s AND answer IS NULL RETURNING id",
                        (rid,),
                    )
                    withdrawn = await cur.fetchone() is not None
            except psycopg.errors.LockNotAvailable as exc:
                # Still being applied after twice the wait: unknown (the answer, when it
                # comes, is in the row; the person sees the alert's state on retrying).
                raise NotAnswered(
                    f"the worker that owns partition {part} is still applying it"
                ) from exc
            if not withdrawn:
                cur = await conn.execute(
                    "DELETE FROM alert_requests WHERE id = %s RETURNING answer", (rid,)
                )
                got = await cur.fetchone()
                if got is not None and got[0] is not None:
                    return _answered(alert_id, got[0])
        raise NotAnswered(f"the worker that owns partition {part} did not answer")

    async def serve(self) -> None:
        """On every worker of a shared group: apply the requests for its partitions."""
        assert self.pool is not None and self.partitions is not None and self.group is not None
        parts, pool = self.partitions, self.pool
        conninfo = pool.conninfo
        assert isinstance(conninfo, str)
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(self.group))))
            while True:
                owned = sorted(parts.owned)
                if owned:
                    async with pool.connection() as c:
                        cur = await c.execute(
                            "SELECT id FROM alert_requests"
                            " WHERE answer IS NULL AND part = ANY(%s::int[]) ORDER BY id",
                            (owned,),
                        )
                        for (rid,) in await cur.fetchall():
                            await self._answer(c, int(rid))
                async for _ in conn.notifies(timeout=0.5, stop_after=1):
                    pass
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _answer(self, conn: psycopg.AsyncConnection[Any], rid: int) -> None:
        """Apply one request holding its row, so that the asker cannot withdraw it meanwhile
        (its withdrawal waits, then finds the answer)."""
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT alert_id, action, request FROM alert_requests"
                " WHERE id = %s AND answer IS NULL FOR UPDATE",
                (rid,),
            )
            row = await cur.fetchone()
            if row is None:
                return  # withdrawn (not answered in time), or answered
            answer = await self._apply(str(row[0]), str(row[1]), row[2])
            await conn.execute(
                "UPDATE alert_requests SET answer = %s, answered_at = now() WHERE id = %s",
                (Jsonb(answer), rid),
            )

    async def _apply(self, alert_id: str, action: str, req: dict[str, Any]) -> dict[str, Any]:
        try:
            if action == "acknowledge":
                change = await self.desk.acknowledge(
                    alert_id, Audience(req["audience"]), by=req["by"], note=req["note"]
                )
                return {"payload": change.payload if change else None}
            change = await self.desk.resolve(alert_id, by=req["by"], note=req["note"])
            return {"payload": change.payload}
        except AlertNotFound:
            return {"error": "not_found"}
        except NotAnAudience as exc:
            return {"error": "not_an_audience", "audience": exc.audience}


def _answered(alert_id: str, answer: dict[str, Any]) -> dict[str, Any] | None:
    error = answer.get("error")
    if error == "not_found":
        raise AlertNotFound(alert_id, "no open alert with this id")
    if error == "not_an_audience":
        raise NotAnAudience(alert_id, str(answer.get("audience")))
    payload = answer.get("payload")
    return dict(payload) if payload is not None else None
