"""The REST API (FastAPI)."""

from pathlib import Path

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from backend.api.deps import AppState
from backend.api.routes import alerts, deadletters, health, stream, telemetry, webhooks
from backend.api.routes import status as status_routes
from backend.api.routes import supervision as supervision_routes


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(title="anju", version="0.1.0", description="安居 anju backend API")
    app.state.anju = state
    app.include_router(health.router)
    app.include_router(stream.router)  # before alerts: /api/alerts/stream is not an alert id
    app.include_router(alerts.router)
    app.include_router(webhooks.router)
    app.include_router(deadletters.router)
    app.include_router(telemetry.router)
    app.include_router(status_routes.router)
    app.include_router(supervision_routes.router)

    @app.exception_handler(psycopg.DataError)
    async def bad_value(_r: Request, _exc: psycopg.DataError) -> JSONResponse:
        # A value the database refuses (a NUL character, a number or time out of range) is the
        # caller's input error: 422, never a 500 (issue 13).
        return JSONResponse({"detail": "a value out of range or with a NUL character"}, 422)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/screen/")

    static = Path(__file__).parent / "static"
    app.mount("/screen", StaticFiles(directory=static, html=True), name="screen")
    return app


__all__ = ["AppState", "create_app"]
