"""What the integration tests share: a backend running in the test's loop, a gateway in a
thread or as a child process, an alert subscriber, and waiting for a condition."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import yaml

from anju.servers import PrivateMosquitto, free_port
from backend.config import BackendSettings
from backend.service import Backend
from gateway import Gateway, GatewayConfig

REPO = Path(__file__).resolve().parent.parent


async def eventually(
    check: Callable[[], bool], within: float = 60.0, what: str = "", *, poll: float = 0.05
) -> None:
    """Wait until ``check()`` holds (polled), else fail naming ``what``."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


async def readyz_answers(
    http: httpx.AsyncClient, status: int, within: float, what: str, *, poll: float = 0.2
) -> httpx.Response:
    """Ask ``/readyz`` (polled) until it answers ``status``, and return that answer; else fail
    naming ``what`` and the last answer."""
    deadline = time.monotonic() + within
    while True:
        last = await http.get("/readyz")
        if last.status_code == status:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what} (last /readyz: {last.status_code} {last.text})"
            )
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


@asynccontextmanager
async def running_gateway(
    cfg: GatewayConfig | dict[str, Any], *, wait_uplink: bool = True
) -> AsyncIterator[Gateway]:
    """The real gateway in a thread of this process until the block ends (then stopped, and it
    must stop within 20 s); ready once subscribed on the LAN and, with ``wait_uplink``,
    connected upstream (leave it out where the uplink broker is down)."""
    gw = Gateway(cfg if isinstance(cfg, GatewayConfig) else GatewayConfig.model_validate(cfg))
    stop = threading.Event()
    thread = threading.Thread(target=gw.run, args=(stop,), name="gateway-under-test")
    thread.start()
    try:
        await eventually(
            lambda: gw.lan_ready.is_set() and (gw.uplink_ready.is_set() or not wait_uplink),
            15,
            "the gateway to connect",
        )
        yield gw
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive()


class GatewayProcess:
    """``python -m anju gateway run --config FILE`` as a child process (to be killed): the
    configuration ``doc`` written to ``tmp/gateway.yaml``, its output to ``tmp/gateway.log``."""

    def __init__(self, doc: dict[str, Any], tmp: Path) -> None:
        self.config = tmp / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(doc))
        self.status = Path(doc["outbox"]["path"] + ".status.json")
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "anju", "gateway", "run", "--config", str(self.config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def lan_ready(self) -> bool:
        """This process has written its status file, subscribed on the LAN."""
        try:
            doc = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return False
        assert self.proc is not None
        return bool(doc.get("pid") == self.proc.pid and doc.get("lan_connected"))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


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
