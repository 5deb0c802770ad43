"""Webhook dead letters: inspect and replay (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from backend.api.deps import AdminDep, StateDep

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # none: every pending dead letter; ids are bigint (out of range: 422, not 500)
    ids: list[Annotated[int, Field(ge=1, le=2**63 - 1)]] | None = Field(None, max_length=10_000)


@router.get("/dead-letters")
async def dead_letters(
    state: StateDep, who: AdminDep, pending_only: bool = True
) -> list[dict[str, Any]]:
    if state.webhooks is None:
        raise HTTPException(503, "webhooks not available")
    return await state.webhooks.dead_letters(pending_only=pending_only)


@router.post("/dead-letters/replay")
async def replay(state: StateDep, who: AdminDep, body: ReplayBody) -> dict[str, int]:
    if state.webhooks is None:
        raise HTTPException(503, "webhooks not available")
    return {"replayed": await state.webhooks.replay(body.ids)}
