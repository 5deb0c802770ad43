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

The main loop builds it with everything it needs (the settings, the ingest whose events lane
it writes, the engine it evaluates through its ``desk``, the listeners of published alerts),
starts it (``start``), waits until it is built (``built``), lets it go (``go``), and at
shutdown, once its own tasks are done, stops it (``stop``): the lane then stores every change
handed over and every rule state, and returns. If the lane fails, ``finished`` raises and the
backend stops (a backend without its alarm path must not look healthy).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt
from psycopg_pool import AsyncConnectionPool

from anju.uplink import UP_EVENTS_SUBSCRIPTION, Record
from backend.alerting import Engine
from backend.config import BackendSettings
from backend.delivery import Delivery, publish_acks
from backend.desk import AlertDesk, Keeper, Saved, StateWriter
from backend.handoff import Split, keep_mine
from backend.ingest import Ingest
from backend.metrics import BackendMetrics
from backend.mqtt import keep_session
from backend.store import AlertStore, Pending
from backend.tasks import supervised

log = logging.getLogger("anju.alarm")


# The events lane's flushes evaluated and waiting for their rule state to be stored before
# they are acknowledged (``AlarmLane._to_ack``).
TO_ACK_CAPACITY = 1_000
TO_ACK = "alarm_to_ack"  # its name in anju_backend_queue_*


class AlarmLane:
    """The lane (see the module). Everything it needs comes in here; what the main loop gets
    from it is ``desk`` (the engine's one boundary, shared by both loops), ``built`` (the
    deliveries requeued at start), ``connected``, ``not_ready`` and ``finished``.

    ``_to_ack`` (bounded, ``TO_ACK_CAPACITY`` flushes; ``anju_backend_queue_*{queue=
    "alarm_to_ack"}``): each committed flush of events, evaluated, waits there until its
    alert changes and rule state are stored, then is acknowledged. Overflow policy: nothing
    in it may be dropped (it is committed); a full queue makes the producer wait (counted as
    ``policy="wait"``), which holds the events lane's writer, whose own queue then applies
    the ingest's policy (``backend.ingest``: events wait for room, back to the MQTT reader;
    what the reader cannot take is not acknowledged and comes again)."""

    def __init__(
        self,
        settings: BackendSettings,
        metrics: BackendMetrics,
        ingest: Ingest,
        engine: Engine,
        *,
        listeners: Sequence[Callable[[Pending], None]] = (),
        on_subscribed: Callable[[], object] = lambda: None,
        split: Split | None = None,
        communities: Callable[[], list[str]] | None = None,
    ) -> None:
        """``listeners``: called on the lane's thread with each alert published (they must
        not block; e.g. hand it to another loop). ``on_subscribed``: called on the lane's
        thread each time its MQTT session is subscribed. Several active workers
        (``backend.partitions``): ``split`` tells the records this worker evaluates from those
        handed to their partition's owner (``backend.handoff``); ``communities``: those whose
        alerts it publishes."""
        self.settings = settings
        self.split = split
        self.metrics = metrics
        self.ingest = ingest
        self.on_subscribed = on_subscribed
        self.built: cf.Future[int] = cf.Future()  # deliveries requeued at start
        self.finished: cf.Future[None] = cf.Future()
        # Every connection open from the start (``_run``): an alarm never waits for one.
        self._pool = AsyncConnectionPool(
            settings.database_url,
            min_size=4,
            max_size=4,
            open=False,
            kwargs={"application_name": "anju-alarm-lane"},
        )
        store = AlertStore(self._pool)
        self._delivery = Delivery(store, metrics)
        self._delivery.listeners.extend(listeners)
        self._delivery.communities = communities
        self._keeper = Keeper(store, self._delivery, metrics)
        self._states = StateWriter(store, metrics)
        self.desk = AlertDesk(engine, self._keeper, self._states)
        # (Bound to the lane's loop when first used there.)
        self._go, self._stop = asyncio.Event(), asyncio.Event()
        self._to_ack: asyncio.Queue[tuple[Saved, dict[str, list[int]]]] = asyncio.Queue(
            TO_ACK_CAPACITY
        )
        metrics.queue_capacity.labels(TO_ACK).set(TO_ACK_CAPACITY)
        self._client: aiomqtt.Client | None = None  # while the session is up
        self._loop: asyncio.AbstractEventLoop | None = None  # while the thread runs
        self._thread = threading.Thread(target=self._main, name="anju-alarm-lane", daemon=True)

    # ---- from the main loop ----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def go(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._go.set)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # (closed meanwhile)
                loop.call_soon_threadsafe(self._stop.set)

    @property
    def connected(self) -> bool:
        """Its MQTT session is up and subscribed."""
        return self._client is not None

    async def not_ready(self, within_s: float = 5.0) -> str | None:
        """Why the lane is not ready (its MQTT session, its database pool), or None; from
        any loop (the pool is tried on the lane's own)."""
        if self._client is None:
            return "broker: the alarm lane is not connected"
        loop = self._loop
        if loop is None or loop.is_closed():
            return "alarm lane: not running"
        try:
            ping = asyncio.run_coroutine_threadsafe(self._ping(), loop)
            await asyncio.wait_for(asyncio.wrap_future(ping), within_s)
        except Exception as exc:  # any failure means "not ready"; the reason to the log
            log.debug("not ready: the alarm lane's database pool: %s", exc)
            return "database: the alarm lane's pool is not reachable"
        return None

    def adopt(self, communities: list[str]) -> cf.Future[int]:
        """A partition taken (from any thread): its unpublished alert changes, to publish."""
        loop = self._loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(self._delivery.adopt(communities), loop)

    async def _ping(self) -> None:
        async with self._pool.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")

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
        self._loop = asyncio.get_running_loop()
        pool, delivery, keeper, states = self._pool, self._delivery, self._keeper, self._states
        await pool.open(wait=True, timeout=30)
        try:
            keeper.inbox.bind()
            states.inbox.bind()
            # (Several active workers: a partition's entries are read back when it is taken.)
            shared = self.settings.shared
            self.built.set_result(0 if shared else await delivery.requeue_unpublished())
            stop_wait = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait([asyncio.ensure_future(self._go.wait()), stop_wait],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if self._stop.is_set():
                return
            async with asyncio.TaskGroup() as tg:

                def task(name: str, run: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
                    return tg.create_task(supervised(name, run, self.metrics), name=name)

                keeping = task("alert-keeper", keeper.run)
                writer = task(
                    "ingest-events",
                    lambda: self.ingest.events.run(self._committed, early_ack=self._publish),
                )
                cancel = [
                    task("mqtt-events", self._session),
                    task("events-acks", self._acknowledge),
                    task("delivery-marks", delivery.marks),
                ]
                writing = task("rule-state-writer", states.run)
                await stop_wait
                log.info("alarm lane stopping")
                await self.ingest.events.stop(writer)  # the flush in hand, to the rules
                delivery.close()
                for t in cancel:
                    t.cancel()
                keeper.close()  # it stores every change handed over, then returns
                await keeping
                states.close()  # it writes the snapshot in hand, then returns
                await writing
            # Every rule state, for the next start; then the marks of what was published.
            await states.flush()
            await states.write(self.desk.all_docs())
            with contextlib.suppress(TimeoutError):  # (else: published again after a restart)
                await asyncio.wait_for(delivery.flush_marks(), 5)
        finally:
            await pool.close()

    async def _session(self) -> None:
        """Events in, alerts out, on a connection of their own, so that neither an alarm
        nor its alert's PUBACK ever waits behind telemetry in one socket's buffer."""

        def up(client: aiomqtt.Client) -> None:
            self.ingest.events.forget_seen()  # (another backend may have written meanwhile)
            self._client = client
            self.on_subscribed()

        def down() -> None:
            self._client = None

        async def serve(client: aiomqtt.Client) -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._receive(client), name="mqtt-events-receive")
                tg.create_task(self._delivery.run(client), name="alert-delivery")

        topic = UP_EVENTS_SUBSCRIPTION
        if self.settings.shared:
            topic = f"$share/{self.settings.worker_group}/{topic}"
        await keep_session(
            self.settings,
            f"{self.settings.client_id}-events",
            [topic],
            serve,
            on_up=up,
            on_down=down,
            what="events session",
        )

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            await self.ingest.submit(msg.topic.value, payload)

    async def _committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        """The events lane's ``on_committed``: the rules at once (once the keeper has room:
        a full keeper makes the events writer wait, outside the engine's lock), the ack once
        stored (a full ``_to_ack`` makes the writer wait too: see the class)."""
        if self.split is not None:
            assert self.settings.worker_group is not None
            new = await keep_mine(self._pool, self.settings.worker_group, self.split, new)
        item = (await self.desk.evaluate_when_room(new), acks)
        if self._to_ack.full():
            self.metrics.queue_overflow.labels(TO_ACK, "wait").inc()
        await self._to_ack.put(item)
        self.metrics.queue_depth.labels(TO_ACK).set(self._to_ack.qsize())

    async def _acknowledge(self) -> None:
        while True:
            saved, acks = await self._to_ack.get()
            self.metrics.queue_depth.labels(TO_ACK).set(self._to_ack.qsize())
            await saved.wait()
            await self._publish(acks)

    async def _publish(self, acks: dict[str, list[int]]) -> None:
        client = self._client
        if client is not None:
            # Unconfirmed records come again; they are dropped as duplicates then.
            with contextlib.suppress(aiomqtt.MqttError):
                await publish_acks(client, acks)
