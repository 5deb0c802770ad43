"""What the integration tests share: a backend running in the test's loop, an alert
subscriber, and waiting for a condition."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt

from anju.servers import PrivateMosquitto, free_port
from backend.config import BackendSettings
from backend.service import Backend


async def eventually(
    check: Callable[[], bool], within: float = 60.0, what: str = "", *, poll: float = 0.05
) -> None:
    """Wait until ``check()`` holds (polled), else fail naming ``what``."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


@asynccontextmanager
async def running_backend(
    db_url: str,
    broker: PrivateMosquitto,
    city: Path,
    *,
    alerting: Path | None = None,
    port: int | None = None,
) -> AsyncIterator[Backend]:
    """The real backend in this loop, subscribed, until the block ends (then stopped as by
    SIGTERM, and it must stop within 20 s)."""
    settings = BackendSettings(
        database_url=db_url,
        mqtt_url=broker.url,
        registry=city,
        api_port=port or free_port(),
        alerting=alerting,
    )
    backend = Backend(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(backend.run(stop), name="backend-under-test")
    try:
        await asyncio.wait_for(backend.started.wait(), 30)
        yield backend
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


class Subscriber:
    """A department's or company's system: collects (topic, payload) from its filters."""

    def __init__(self, port: int, *filters: str) -> None:
        self.port = port
        self.filters = filters
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as c:
            for f in self.filters:
                await c.subscribe(f, qos=1)
            self.ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                self.got.append((m.topic.value, json.loads(m.payload)))

    def of_type(self, alert_type: str) -> list[tuple[str, dict[str, Any]]]:
        return [(t, p) for t, p in self.got if p["type"] == alert_type]
