"""Issue 10, Deliver 2 (backend): an exception injected into each long-lived task of the
backend, in turn. A task that keeps no state of its own recovers (logged, counted, started
again) and the backend goes on; any other stops the backend (so that systemd starts it again:
never a half-dead process), and after a restart no acknowledged reading is lost: the gateway
sends again what was not acknowledged."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import backend.service as service_module
from anju.servers import PrivateMosquitto, free_port
from anju.uplink import encode_batch, record_body, up_topic
from backend.alarm import AlarmLane
from backend.config import BackendSettings
from backend.delivery import Delivery
from backend.desk import AlertDesk, Keeper, RuleFeed, StateWriter
from backend.ingest import EventsLane, TelemetryLane
from backend.service import Backend, _ApiServer
from backend.webhooks import Webhooks
from tests.support import eventually
from tests.test_poison import FIRE, GW, SMOKE, Acks, listening, publish

pytestmark = pytest.mark.integration

ELEV = "jx-nh-0001-elev-03"


# task name -> (owner, method, recovers, which calls to break (by their arguments))
TASKS: dict[str, tuple[Any, str, bool, Callable[[tuple[Any, ...]], bool] | None]] = {
    "alert-timers": (AlertDesk, "tick", True, None),
    "alert-state": (AlertDesk, "snapshots", True, None),
    "loop-lag": (Backend, "_loop_lag", True, None),
    "storage-maintenance": (None, "run_maintenance", True, None),
    "api": (_ApiServer, "serve", False, None),
    "mqtt-session": (Backend, "_receive", False, None),
    "ingest": (TelemetryLane, "_gather", False, None),
    "rules": (RuleFeed, "_evaluate_queued", False, None),
    "rules-acks": (RuleFeed, "acknowledge", False, None),
    "webhooks": (Webhooks, "run", False, None),
    "alert-keeper": (Keeper, "drain", False, None),
    "ingest-events": (EventsLane, "_gather", False, None),
    "mqtt-events": (AlarmLane, "_receive", False, None),
    "events-acks": (AlarmLane, "_acknowledge", False, None),
    "rule-state-writer": (StateWriter, "flush", False, None),
    "delivery-marks": (Delivery, "marks", False, None),
}


class Injected(RuntimeError):
    pass


def breaker(
    orig: Callable[..., Awaitable[Any]],
    armed: threading.Event,
    which: Callable[[tuple[Any, ...]], bool] | None,
) -> Callable[..., Awaitable[Any]]:
    """``orig``, which raises ``Injected`` once (at its next call, or while running) after
    ``armed`` is set (from any thread: the alarm lane has a loop of its own)."""
    fired = threading.Event()

    async def broken(*args: Any, **kw: Any) -> Any:
        if fired.is_set() or (which is not None and not which(args)):
            return await orig(*args, **kw)
        t = asyncio.ensure_future(orig(*args, **kw))
        while not armed.is_set():
            if t.done():
                return t.result()
            await asyncio.sleep(0.01)
        if fired.is_set():
            return await t
        fired.set()
        t.cancel()
        raise Injected("injected")

    return broken


class Gateway:
    """Sends readings (metric ``probe`` = seq) and resends what was not acknowledged."""

    def __init__(self, port: int, acks: Acks) -> None:
        self.port, self.acks = port, acks
        self.boot = uuid.uuid4().hex
        self.sent: list[int] = []
        self.alarms: list[int] = []

    async def send(self, seqs: list[int]) -> None:
        t = int(time.time() * 1000)
        rows = [
            (
                s,
                self.boot,
                record_body(
                    device_id=ELEV,
                    kind="t",
                    ts=t + s,
                    rx=t + s,
                    gateway_timed=False,
                    payload={"m": {"probe": s}},
                ),
            )
            for s in seqs
        ]
        self.sent = sorted(set(self.sent) | set(seqs))
        await publish(self.port, up_topic(GW), encode_batch(GW, rows))

    async def alarm(self, seq: int) -> None:
        t = int(time.time() * 1000)
        body = record_body(
            device_id=SMOKE,
            kind="e",
            ts=t,
            rx=t,
            gateway_timed=False,
            payload={"e": "alarm", "x": {}},
        )
        self.alarms.append(seq)
        await publish(
            self.port, up_topic(GW, events=True), encode_batch(GW, [(seq, self.boot, body)])
        )

    def acked(self) -> set[int]:
        return set(self.acks.got.get(GW, []))

    async def resend_unacked(self) -> None:
        todo = [s for s in self.sent if s not in self.acked()]
        if todo:
            await self.send(todo)
        for s in self.alarms:
            if s not in self.acked():
                await self.alarm(s)


def stored(db_url: str) -> set[int]:
    with psycopg.connect(db_url) as conn:
        q = "SELECT num FROM readings WHERE device_id = %s AND metric = 'probe'"
        return {int(n) for (n,) in conn.execute(q, (ELEV,)).fetchall()}


@pytest.mark.parametrize("name", list(TASKS))
async def test_an_exception_in_each_task_is_recovered_or_stops_the_backend(
    name: str,
    db_url: str,
    broker: PrivateMosquitto,
    city_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner, method, recovers, which = TASKS[name]
    armed = threading.Event()
    if owner is None:
        orig = getattr(service_module, method)
        monkeypatch.setattr(service_module, method, breaker(orig, armed, which))
    else:
        monkeypatch.setattr(owner, method, breaker(getattr(owner, method), armed, which))

    def settings() -> BackendSettings:
        return BackendSettings(
            database_url=db_url, mqtt_url=broker.url, registry=city_file, api_port=free_port()
        )

    async with listening(broker.port, FIRE) as (sub, acks):
        gw = Gateway(broker.port, acks)
        backend = Backend(settings())
        stop = asyncio.Event()
        run = asyncio.create_task(backend.run(stop))
        await asyncio.wait_for(backend.started.wait(), 30)
        await gw.send([1, 2, 3])
        await eventually(lambda: {1, 2, 3} <= gw.acked(), 30, "the first acks")
        armed.set()
        await gw.send([4, 5, 6])
        errors = backend.metrics.task_errors.labels(name)
        await gw.alarm(100)  # (an alert change for the keeper, the delivery, its marks)
        if recovers:
            await eventually(lambda: errors._value.get() >= 1, 30, f"{name} to fail")
            await gw.send([7])
            await eventually(lambda: {*range(1, 8), 100} <= gw.acked(), 30, "every ack")
            await eventually(lambda: bool(sub.of_type("fire.alarm")), 30, "the fire alarm")
            assert not run.done(), "the backend stopped"
            stop.set()
            await asyncio.wait_for(run, 30)
        else:
            done, _ = await asyncio.wait({run}, timeout=60)
            assert done, f"an exception in {name} left the backend running (half dead?)"
            with pytest.raises(BaseExceptionGroup) as caught:
                run.result()
            assert caught.group_contains(Injected)
            assert errors._value.get() == 1
            # Started again (by systemd), with the gateway sending what was not acknowledged.
            monkeypatch.undo()
            again = Backend(settings())
            stop = asyncio.Event()
            run = asyncio.create_task(again.run(stop))
            try:
                await asyncio.wait_for(again.started.wait(), 30)
                await gw.resend_unacked()
                await eventually(lambda: {*range(1, 7), 100} <= gw.acked(), 30, "every ack")
                await eventually(lambda: bool(sub.of_type("fire.alarm")), 30, "the fire alarm")
            finally:
                stop.set()
                await asyncio.wait_for(run, 30)
    assert gw.acked() - {100} <= stored(db_url), "an acknowledged reading was lost"
