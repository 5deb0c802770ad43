"""Guarantees broken on purpose (``ANJU_BREAK``, test only; docs/guarantees.md "Breaking a
guarantee on purpose"): each knob, on a real backend, Mosquitto and PostgreSQL, has the effect
the chaos harness relies on, and the backend intact does not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import httpx
import psycopg
import pytest

from anju.servers import PrivateMosquitto, free_port
from anju.uplink import ack_topic, decode_ack, up_topic
from backend.config import BackendSettings
from backend.service import Backend
from tests.support import eventually
from tests.test_ingest_support import SimOutbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GW = "gw-break-test"  # not in the registry: its devices are stored, not evaluated


def test_an_unknown_name_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANJU_BREAK", "skip_dedupe,ack_befor_commit")
    with pytest.raises(ValueError, match=r"unknown guarantee.*ack_befor_commit"):
        BackendSettings(
            database_url="postgresql://x@127.0.0.1/x", mqtt_url="mqtt://127.0.0.1:1883",
            registry=Path("city.yaml"),
        )  # fmt: skip
    monkeypatch.setenv("ANJU_BREAK", " skip_dedupe , no_event_priority ")
    s = BackendSettings(
        database_url="postgresql://x@127.0.0.1/x", mqtt_url="mqtt://127.0.0.1:1883",
        registry=Path("city.yaml"),
    )  # fmt: skip
    assert s.break_guarantees == {"skip_dedupe", "no_event_priority"}


class Gateway:
    """Publishes batches as ``GW`` and collects the sequence numbers acknowledged to it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.acked: list[int] = []
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _listen(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as c:
            await c.subscribe(ack_topic(GW), qos=1)
            self.ready.set()
            async for m in c.messages:
                assert isinstance(m.payload, bytes)
                self.acked.extend(decode_ack(m.payload))

    async def publish(self, payload: bytes, *, events: bool = False) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as c:
            await c.publish(up_topic(GW, events=events), payload, qos=1)

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[Gateway]:
        self._task = asyncio.create_task(self._listen(), name="gateway-acks")
        try:
            await asyncio.wait_for(self.ready.wait(), 10)
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def backend(
    db_url: str, broker: PrivateMosquitto, city: Path, broken: frozenset[str]
) -> AsyncIterator[Backend]:
    settings = BackendSettings(
        database_url=db_url,
        mqtt_url=broker.url,
        registry=city,
        api_port=free_port(),
        break_guarantees=broken,
    )
    b = Backend(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(b.run(stop), name="backend-under-test")
    try:
        await asyncio.wait_for(b.started.wait(), 30)
        yield b
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def scalar(url: str, sql: str) -> object:
    with psycopg.connect(url) as c:
        row = c.execute(sql).fetchone()
        assert row is not None
        return row[0]


@pytest.mark.parametrize("broken", [True, False], ids=["broken", "intact"])
async def test_skip_dedupe_stores_a_resent_batch_again(
    db_url: str, broker: PrivateMosquitto, city_file: Path, broken: bool
) -> None:
    box = SimOutbox(GW, 20, event_every=0)  # telemetry only: 20 records of 4 readings
    knobs = frozenset({"skip_dedupe"} if broken else set())
    async with (
        backend(db_url, broker, city_file, knobs) as b,
        Gateway(broker.port).listening() as gw,
    ):
        (payload,) = box.batches(per_batch=100)
        for n in (1, 2):  # the same batch twice, as after a lost acknowledgement
            await gw.publish(payload)
            await eventually(lambda n=n: len(gw.acked) == 20 * n, 30, f"acknowledgement {n}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.settings.api_port}") as http:
            text = (await http.get("/metrics")).text
    gauge = 'anju_backend_broken_guarantee{name="skip_dedupe"} 1.0'
    assert (gauge in text) is broken
    stored = scalar(db_url, "SELECT count(*) FROM readings")
    assert stored == (2 if broken else 1) * box.expected_readings()


@pytest.mark.parametrize("broken", [True, False], ids=["broken", "intact"])
async def test_ack_before_commit_acknowledges_what_is_not_stored(
    db_url: str, broker: PrivateMosquitto, city_file: Path, broken: bool
) -> None:
    box = SimOutbox(GW, 10, event_every=0)
    knobs = frozenset({"ack_before_commit"} if broken else set())
    async with (
        backend(db_url, broker, city_file, knobs),
        Gateway(broker.port).listening() as gw,
        await psycopg.AsyncConnection.connect(db_url) as blocker,
    ):
        # The writer cannot commit while this transaction holds the sequence ranges' table.
        await blocker.execute("LOCK TABLE ingest_seen IN ACCESS EXCLUSIVE MODE")
        (payload,) = box.batches(per_batch=100)
        await gw.publish(payload)

        async def writer_blocked() -> bool:
            cur = await blocker.execute(
                "SELECT count(*) FROM pg_locks"
                " WHERE NOT granted AND relation = 'ingest_seen'::regclass"
            )
            row = await cur.fetchone()
            return bool(row and row[0])

        for _ in range(600):
            if await writer_blocked():
                break
            await asyncio.sleep(0.05)
        assert await writer_blocked(), "the writer never waited for the lock"
        if broken:
            await eventually(lambda: len(gw.acked) == 10, 30, "the early acknowledgement")
            cur = await blocker.execute("SELECT count(*) FROM readings")
            assert await cur.fetchone() == (0,), "acknowledged, and not committed"
        else:
            assert gw.acked == [], "acknowledged before its commit"
        await blocker.rollback()
        await eventually(lambda: len(set(gw.acked)) == 10, 30, "every record acknowledged")
    assert scalar(db_url, "SELECT count(*) FROM readings") == box.expected_readings()


@pytest.mark.parametrize("broken", [True, False], ids=["broken", "intact"])
async def test_no_event_priority_sends_events_through_the_telemetry_lane(
    db_url: str, broker: PrivateMosquitto, city_file: Path, broken: bool
) -> None:
    box = SimOutbox(GW, 5, event_every=1)  # events only, on the events topic
    knobs = frozenset({"no_event_priority"} if broken else set())
    async with (
        backend(db_url, broker, city_file, knobs),
        Gateway(broker.port).listening() as gw,
    ):
        (payload,) = box.batches(per_batch=100)
        await gw.publish(payload, events=True)
        await eventually(lambda: len(gw.acked) == 5, 30, "every event acknowledged")
    assert scalar(db_url, "SELECT count(*) FROM events") == 5
    lanes = scalar(db_url, "SELECT string_agg(DISTINCT lane, ',') FROM ingest_seen")
    assert lanes == ("t" if broken else "e")
