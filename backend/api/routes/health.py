"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from backend.api.deps import StateDep

log = logging.getLogger("anju.api")

router = APIRouter(tags=["operations"])
_DB_WITHIN_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: StateDep) -> dict[str, str]:
    """Ready when every connection the backend needs is up: the main database pool and MQTT
    session, the alarm lane's session and pool, the worker group's lock connection (when in
    one); else 503 with the first reason. It answers within about 5 s while the database is
    away (a probe must not hang for the pool's 30 s)."""
    try:
        async with state.store.pool.connection(timeout=_DB_WITHIN_S) as conn:
            await asyncio.wait_for(conn.execute("SELECT 1"), _DB_WITHIN_S)
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
        log.debug("not ready: database: %s", exc)
        raise HTTPException(503, "database: not reachable") from exc
    if not state.mqtt_connected:
        raise HTTPException(503, "broker: not connected")
    if not state.alarm_connected():
        raise HTTPException(503, "broker: the alarm lane is not connected")
    reason = await state.not_ready()  # the alarm lane's pool, the worker group's lock, ...
    if reason is not None:
        raise HTTPException(503, reason)
    return {"status": "ready"}


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
