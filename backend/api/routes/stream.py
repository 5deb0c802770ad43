"""The live stream for screens: Server-Sent Events of alert changes the caller may see."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from backend.api.deps import StateDep, StreamPrincipalDep

router = APIRouter(prefix="/api/alerts", tags=["alerts"])
KEEPALIVE_S = 15.0


@router.get("/stream")
async def stream(request: Request, state: StateDep, who: StreamPrincipalDep) -> StreamingResponse:
    """``text/event-stream``: one ``alert`` event per change (the section 2 payload); a
    comment every 15 s keeps proxies from closing the connection. EventSource clients pass
    the token as ``?access_token=``."""
    hub = state.live
    if hub is None:
        raise HTTPException(503, "live stream not available")
    q = hub.subscribe()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": anju live alerts\n\n"
            while not await request.is_disconnected():
                try:
                    payload = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if who.sees(payload):
                    data = json.dumps(payload, ensure_ascii=False)
                    yield f"event: alert\ndata: {data}\n\n".encode()
        finally:
            hub.unsubscribe(q)

    return StreamingResponse(events(), media_type="text/event-stream")
