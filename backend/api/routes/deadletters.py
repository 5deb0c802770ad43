"""Uplink dead letters (issue 10): what the backend rejected from the gateways, and why (admin).

``GET /api/ingest/dead-letters?gateway=...&reason=...&limit=...``: newest first. The same as
``anju backend dead-letters``; docs/operations.md says what each reason means.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from backend.api.deps import AdminDep, StateDep
from backend.deadletters import as_json, listing_query

router = APIRouter(prefix="/api/ingest", tags=["ingest"])


@router.get("/dead-letters")
async def dead_letters(
    state: StateDep,
    who: AdminDep,
    gateway: str | None = None,
    reason: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    q, args = listing_query(gateway_id=gateway, reason=reason, limit=limit)
    async with state.store.pool.connection() as conn:
        cur = await conn.execute(q.encode(), args)
        return [as_json(r) for r in await cur.fetchall()]
