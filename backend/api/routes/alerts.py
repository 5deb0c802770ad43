"""Alerts: list, and the audit chain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from backend.api.deps import AuthDep, StateDep

router = APIRouter(prefix="/api/alerts", tags=["alerts"], dependencies=[AuthDep])


@router.get("")
async def list_alerts(
    state: StateDep,
    open_only: bool = False,
    community_id: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """Alerts, newest first, with the subscriber payload of PROTOCOL.md section 2."""
    return await state.store.list_alerts(
        open_only=open_only, community_id=community_id, limit=limit
    )


@router.get("/audit/verify")
async def verify_audit(state: StateDep) -> dict[str, Any]:
    """Recompute the hash chain of the audit log."""
    r = await state.store.verify_audit()
    return {"ok": r.ok, "entries": r.entries, "first_bad": r.first_bad}
