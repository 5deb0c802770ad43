"""The REST API (FastAPI)."""

from fastapi import FastAPI

from backend.api.deps import AppState
from backend.api.routes import alerts, health


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(title="anju", version="0.1.0", description="安居 anju backend API")
    app.state.anju = state
    app.include_router(health.router)
    app.include_router(alerts.router)
    return app


__all__ = ["AppState", "create_app"]
