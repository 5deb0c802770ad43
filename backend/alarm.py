"""The alarm lane: events and statuses, from the gateways' uplink to the subscribers, on a
thread and an event loop of their own.

Why a thread. The backend's main loop is busy most of the time with telemetry (decoding
batches, COPY, the rules over every reading, timers, snapshots). On one loop every step of an
alarm's path (each database round trip, each PUBACK) waits for its turn behind that work, and
at 20,000 readings/s those turns added up to hundreds of milliseconds. Here a step waits at
most for the interpreter lock (handed over every few milliseconds) and, once per evaluation,
for the desk's lock (one telemetry chunk, one timer pass).

On this loop:

- the events MQTT connection: ``anju/gw/+/up/e`` in; alerts (``backend.delivery``) and the
  acknowledgements of events out;
- the ingest's events lane writer (its own database connection);
- the rules over each committed flush of events and statuses (``AlertDesk.evaluate``), then
  that flush's acknowledgement once its alert changes and rule state are stored;
- the ``Keeper`` (every alert change, whichever loop made it, stored in order) and the
  ``StateWriter``, on a small connection pool of their own; delivery and its marks.

The main loop starts it (``start``), waits until it is built (``built``), wires the desk to it,
lets it go (``go``), and at shutdown, once its own tasks are done, stops it (``stop``): the
lane then stores every change handed over and every rule state, and returns. If the lane
fails, ``finished`` raises and the backend stops (a backend without its alarm path must not
look healthy).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

import aiomqtt
from psycopg_pool import AsyncConnectionPool

from anju.backoff import backoff
from anju.uplink import UP_EVENTS_SUBSCRIPTION, Record
from backend.config import BackendSettings
from backend.delivery import Delivery, publish_acks
from backend.desk import AlertDesk, Keeper, Saved, StateWriter
from backend.ingest import Ingest
from backend.metrics import BackendMetrics
from backend.mqtt import uplink_client
from backend.store import AlertStore
from backend.tasks import supervised

log = logging.getLogger("anju.alarm")


class AlarmLane:
    def __init__(
        self,
        settings: BackendSettings,
        metrics: BackendMetrics,
        ingest: Ingest,
        *,
        on_subscribed: Callable[[], object] = lambda: None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ingest = ingest
        self.on_subscribed = on_subscribed  # called on the lane's thread
        self.built: cf.Future[int] = cf.Future()  # deliveries requeued at start
        self.finished: cf.Future[None] = cf.Future()
        self.desk: AlertDesk | None = None  # set by the main loop before ``go``
        self.keeper: Keeper
        self.states: StateWriter
        self.delivery: Delivery
        self.client: aiomqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._go: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._to_ack: asyncio.Queue[tuple[Saved, dict[str, list[int]]]] | None = None
        self._thread = threading.Thread(target=self._main, name="anju-alarm-lane", daemon=True)

    # ---- from the main loop ----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def go(self, desk: AlertDesk) -> None:
        self.desk = desk
        assert self._loop is not None and self._go is not None
        self._loop.call_soon_threadsafe(self._go.set)

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # (closed meanwhile)
                loop.call_soon_threadsafe(stop.set)

    # ---- the lane's thread -----------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # handed to the main loop, which stops the backend
            if not self.built.done():
                self.built.set_exception(exc)
            if not self.finished.done():
                self.finished.set_exception(exc)
        else:
            if not self.built.done():
                self.built.set_exception(RuntimeError("the alarm lane stopped before it began"))
            if not self.finished.done():
                self.finished.set_result(None)

    async def _run(self) -> None:
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._go, self._stop = asyncio.Event(), asyncio.Event()
        self._to_ack = asyncio.Queue()
        self.ingest.events_loop = self._loop
        # Every connection open from the start: an alarm never waits for one to be made.
        pool = AsyncConnectionPool(s.database_url, min_size=4, max_size=4, open=False)
        await pool.open(wait=True, timeout=30)
        try:
            store = AlertStore(pool)
            self.delivery = Delivery(store, self.metrics)
            self.keeper = Keeper(store, self.delivery, self.metrics)
            self.states = StateWriter(store, self.metrics)
            self.keeper.inbox.bind()
            self.states.inbox.bind()
            requeued = await self.delivery.requeue_unpublished()
            self.built.set_result(requeued)
            stop_wait = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([asyncio.ensure_future(self._go.wait()), stop_wait],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if self._stop.is_set():
                return
            async with asyncio.TaskGroup() as tg:

                def task(name: str, run: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
                    return tg.create_task(supervised(name, run, self.metrics), name=name)

                keeper = task("alert-keeper", self.keeper.run)
                writer = task(
                    "ingest-events",
                    lambda: self.ingest.run_lane("e", self._committed, early_ack=self._publish),
                )
                cancel = [
                    task("mqtt-events", self._session),
                    task("events-acks", self._acknowledge),
                    task("rule-state-writer", self.states.run),
                    task("delivery-marks", self.delivery.marks),
                ]
                await stop_wait
                log.info("alarm lane stopping")
                await self.ingest.stop_lane("e", writer)  # the flush in hand, to the rules
                self.delivery.close()
                for t in cancel:
                    t.cancel()
                self.keeper.close()  # it stores every change handed over, then returns
                await keeper
            # Every rule state, for the next start; then the marks of what was published.
            assert self.desk is not None
            await self.states.flush()
            await self.states.write(self.desk.all_docs())
            with contextlib.suppress(TimeoutError):  # (else: published again after a restart)
                await asyncio.wait_for(self.delivery.flush_marks(), 5)
        finally:
            await pool.close()

    async def _session(self) -> None:
        """Events in, alerts out, on a connection of their own, so that neither an alarm
        nor its alert's PUBACK ever waits behind telemetry in one socket's buffer."""
        delays = backoff(0.5, 10.0)
        while True:
            try:
                async with uplink_client(
                    self.settings, f"{self.settings.client_id}-events"
                ) as client:
                    await client.subscribe(UP_EVENTS_SUBSCRIPTION, qos=1)
                    self.ingest.forget_seen()  # (another backend may have written meanwhile)
                    self.client = client
                    self.on_subscribed()
                    delays = backoff(0.5, 10.0)
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._receive(client), name="mqtt-events-receive")
                        tg.create_task(self.delivery.run(client), name="alert-delivery")
            except* aiomqtt.MqttError as eg:
                self.client = None
                delay = next(delays)
                log.warning("events connection lost (%s); again in %.1f s", eg.exceptions[0], delay)
                await asyncio.sleep(delay)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            await self.ingest.submit(msg.topic.value, payload)

    async def _committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        """The events lane's ``on_committed``: the rules at once, the ack once stored."""
        assert self.desk is not None and self._to_ack is not None
        self._to_ack.put_nowait((self.desk.evaluate(new), acks))

    async def _acknowledge(self) -> None:
        assert self._to_ack is not None
        while True:
            saved, acks = await self._to_ack.get()
            await saved.wait()
            await self._publish(acks)

    async def _publish(self, acks: dict[str, list[int]]) -> None:
        client = self.client
        if client is not None:
            # Unconfirmed records come again; they are dropped as duplicates then.
            with contextlib.suppress(aiomqtt.MqttError):
                await publish_acks(client, acks)
