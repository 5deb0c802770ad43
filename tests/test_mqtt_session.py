"""``backend.mqtt.keep_session`` on a real Mosquitto: whoever tracks the session's state
(readiness, ``anju_mqtt_connected``) hears of its end however it ends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from anju.servers import PrivateMosquitto
from backend.config import BackendSettings
from backend.mqtt import keep_session

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_cancelled_while_connected_reports_down_and_stays_cancelled(
    broker: PrivateMosquitto, city_file: Path
) -> None:
    settings = BackendSettings(
        database_url="postgresql://anju@127.0.0.1:1/anju", mqtt_url=broker.url, registry=city_file
    )
    events: list[str] = []
    up = asyncio.Event()

    def on_up(client: aiomqtt.Client) -> None:
        events.append("up")
        up.set()

    async def serve(client: aiomqtt.Client) -> None:
        async for _ in client.messages:
            pass

    task = asyncio.create_task(
        keep_session(
            settings,
            "test-keep-session",
            ["nothing/here"],
            serve,
            on_up=on_up,
            on_down=lambda: events.append("down"),
            what="test session",
        ),
        name="keep-session-under-test",
    )
    await asyncio.wait_for(up.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # the cancellation is not swallowed
    assert task.cancelled()
    assert events == ["up", "down"]
