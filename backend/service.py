"""The backend process: ingest writer, alerting, delivery and the API, in one asyncio loop.

Every long-lived loop is a named task in a TaskGroup; SIGTERM or SIGINT sets ``stop`` and the
service shuts down in order. The MQTT session reconnects with backoff; the ingest writer and the
alert timers live outside it, so a lost broker connection never interrupts a database commit or
the rules that follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass

import aiomqtt
import psycopg
import uvicorn
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from anju.backoff import backoff
from anju.now import now_ms
from anju.registry import CityIndex, load_registry
from anju.uplink import STATE_SUBSCRIPTION, UP_SUBSCRIPTION, Record
from backend.alarm import AlarmLane
from backend.alerting import AlertBook, Deadlines, Engine, Shared
from backend.alerting.model import DeviceState
from backend.api import AppState, create_app
from backend.api.deps import Tokens
from backend.audit_anchor import AuditAnchor, mqtt_publisher
from backend.config import BackendSettings, check_api_access, load_alerting
from backend.db.maintenance import run_maintenance
from backend.db.migrate import migrate, parse_storage
from backend.db.registry import RegistryRow, sync_registry
from backend.db.retry import until_done
from backend.delivery import LiveHub, publish_acks
from backend.desk import AlertDesk, RuleFeed, waited
from backend.handoff import channel, keep_mine, take
from backend.ingest import Ingest, OnCommitted
from backend.metrics import BackendMetrics
from backend.mqtt import keep_session
from backend.partitions import Partitions
from backend.requests import AlertActions
from backend.store import AlertStore, Pending
from backend.tasks import supervised
from backend.webhooks import Webhooks
from backend.workers import hold_lead, wait_for_lead

log = logging.getLogger("anju.backend")
_ALARM_STOP_S = 60


def _on_loop(
    loop: asyncio.AbstractEventLoop, f: Callable[[Pending], None]
) -> Callable[[Pending], None]:
    """``f``, called on ``loop`` from whichever thread calls the result."""

    def call(p: Pending) -> None:
        loop.call_soon_threadsafe(f, p)

    return call


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the service owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True, slots=True)
class _Running:
    """What exists only while the backend runs: built from the database once it is reachable
    and migrated (the open alerts, the rule states, the deliveries to resend)."""

    engine: Engine
    alarm: AlarmLane
    feed: RuleFeed
    app_state: AppState


class Backend:
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = s = settings
        self.metrics = BackendMetrics()
        self.city = CityIndex(load_registry(settings.registry))
        self.alerting = load_alerting(settings.alerting)
        self.live = LiveHub(self.metrics)
        # Opened by ``run`` once the database is reachable; closed when it returns.
        self.pool = AsyncConnectionPool(s.database_url, min_size=1, max_size=8, open=False)
        self.store = AlertStore(self.pool, anchor_file=s.audit_anchor_file)
        self.webhooks = Webhooks(self.alerting.webhooks, self.store, self.metrics)
        self.ingest = Ingest(
            s.database_url,
            self.metrics,
            queue_max=s.queue_max,
            batch_max_records=s.batch_max_records,
            batch_wait_ms=s.batch_wait_ms,
            device_gateway={d.id: d.gateway_id for d in self.city.devices.values()},
            broken=s.break_guarantees,
            shared=s.shared,
        )
        self.client: aiomqtt.Client | None = None  # the main MQTT session, while it is up
        self.started = asyncio.Event()  # both MQTT sessions subscribed
        self._main_subscribed = asyncio.Event()
        self._events_subscribed = asyncio.Event()  # up, and subscribed to the gateways' uplink
        self._gateways_online: dict[str, bool] = {}  # logged at INFO when it changes (issue 13)
        # Several active workers: the last state message of each gateway of another worker's
        # partition, applied when this worker takes the partition.
        self._gateway_states: dict[str, bytes] = {}
        # The worker group's lock connection: only in a worker group, and only while leading.
        self._lead: psycopg.AsyncConnection | None = None
        self._up: _Running | None = None  # while running (see ``_Running``)
        # Several active workers (``shared``): this worker's partitions of the city.
        self.partitions: Partitions | None = None
        if s.shared and s.worker_group is not None:
            self.partitions = Partitions(
                s.database_url,
                s.worker_group,
                s.partitions,
                self.city.communities,
                adopt=self._adopt,
            )
        self._started_ms = 0  # when this worker began serving (``_serve``)
        for name in sorted(settings.break_guarantees):  # (test only: docs/guarantees.md)
            self.metrics.broken_guarantee.labels(name).set(1)

    # What exists only while running (``_Running``); asked for otherwise: a RuntimeError.

    def _running(self) -> _Running:
        if self._up is None:
            raise RuntimeError("the backend is not running")
        return self._up

    @property
    def engine(self) -> Engine:
        return self._running().engine

    @property
    def alarm(self) -> AlarmLane:
        return self._running().alarm

    @property
    def desk(self) -> AlertDesk:
        return self._running().alarm.desk

    @property
    def feed(self) -> RuleFeed:
        return self._running().feed

    @property
    def app_state(self) -> AppState:
        return self._running().app_state

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        if s.break_guarantees:
            log.warning(
                "GUARANTEES BROKEN ON PURPOSE (ANJU_BREAK=%s): for chaos tests only, never in"
                " production (docs/guarantees.md)",
                ",".join(sorted(s.break_guarantees)),
            )
        if not await self._migrate_when_reachable(stop):
            return
        if self.partitions is not None:
            # Counted among the group's workers from now, so that workers started together
            # share the partitions (``backend.partitions``).
            delays = backoff(0.5, 5.0)
            while not stop.is_set():
                try:
                    await self.partitions.connect()
                    break
                except psycopg.OperationalError as exc:
                    delay = next(delays)
                    log.warning("partitions: database unavailable (%s); again in %.1f s",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else exc,
                                delay)  # fmt: skip
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
        if s.worker_group is None or s.shared:
            await self._run(stop)
            return
        # Several workers (docs/scaling.md): the one holding the group's lock runs; the lock
        # is released (its connection closed) only after everything is stored.
        lead = await wait_for_lead(s.database_url, s.worker_group, stop)
        if lead is None:
            return
        self._lead = lead
        try:
            await self._run(stop)
        finally:
            self._lead = None
            with contextlib.suppress(psycopg.Error):
                await lead.close()

    async def _run(self, stop: asyncio.Event) -> None:
        await self.pool.open(wait=True, timeout=30)
        try:
            async with self.pool.connection() as conn:
                await sync_registry(
                    conn,
                    [RegistryRow(d.id, d.community_id, d.kind) for d in self.city.devices.values()],
                )
            book = AlertBook(armed_from_ms=now_ms())  # open alerts' deadlines re-armed
            parts = self.partitions
            if parts is None:  # (several active workers: a partition's, when it is taken)
                for alert in await self.store.load_open(self.city):
                    book.load(alert)
            engine = await self._engine(book, restore=parts is None)
            loop = asyncio.get_running_loop()
            alarm = AlarmLane(
                self.settings,
                self.metrics,
                self.ingest,
                engine,
                # Delivery runs on the alarm lane's thread; webhooks and screens on this loop.
                listeners=[_on_loop(loop, self.webhooks.offer), _on_loop(loop, self.live.offer)],
                on_subscribed=lambda: loop.call_soon_threadsafe(self._events_up),
                split=self._split if parts is not None else None,
                communities=(lambda: parts.communities) if parts is not None else None,
            )
            alarm.start()
            try:
                requeued = await waited(alarm.built)
                self._up = self._assemble(engine, alarm)
                await self._serve(stop, self._up, requeued, len(book.open))
            finally:
                alarm.stop()
                # (Its failure is raised by _serve; a lane that does not stop is left.)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(waited(alarm.finished), 30)
                self._up = None
        finally:
            await self.pool.close()

    async def _engine(self, book: AlertBook, *, restore: bool = True) -> Engine:
        """The rules' engine, with the open alerts (``book``) and the stored rule states
        (unless not ``restore``: several active workers load a partition's when they take
        it)."""
        cfg = self.alerting
        shared = Shared(
            flap_cycles=cfg.flap_cycles,
            flap_window_ms=int(cfg.flap_window_s * 1000),
            storm_count=cfg.storm_count,
            storm_window_ms=int(cfg.storm_window_s * 1000),
            gateway_silent_ms=int(cfg.gateway_silent_s * 1000),
            deadlines=Deadlines(
                int(cfg.ack_deadline_s * 1000), int(cfg.fire_ack_deadline_s * 1000)
            ),
        )
        engine = Engine(
            self.city,
            book,
            params=cfg.params,
            shared=shared,
            now_ms=now_ms(),
            on_late=self.metrics.late_events.inc,
        )
        if restore:
            engine.restore(await self.store.load_states())
            rearm_held_open(engine.states.values(), now_ms())
        for device_id in self.city.devices:
            engine.state(device_id)  # made now, and frozen below with the registry
        return engine

    def _assemble(self, engine: Engine, alarm: AlarmLane) -> _Running:
        s, cfg = self.settings, self.alerting
        app_state = AppState(
            self.store,
            self.metrics,
            s.api_token,
            tokens=Tokens.of(cfg.tokens, s.api_token),
            desk=alarm.desk,
            actions=AlertActions(
                alarm.desk,
                pool=self.pool,
                group=s.worker_group,
                partitions=self.partitions,
            ),
            live=self.live,
            webhooks=self.webhooks,
            city=self.city,
            alarm_connected=lambda: alarm.connected,
            not_ready=self._not_ready,
        )
        return _Running(engine, alarm, RuleFeed(alarm.desk, self._publish_acks), app_state)

    async def _not_ready(self) -> str | None:
        """Why the backend is not ready beyond its main pool and main MQTT session (which
        ``/readyz`` tries itself): the alarm lane's session and pool, the worker group's lock
        connection; None when ready."""
        up = self._up
        if up is None:
            return "backend: not running"
        lead = self._lead if self.partitions is None else self.partitions.conn
        if self.settings.worker_group is not None and (lead is None or lead.closed or lead.broken):
            return "database: the worker group's lock connection is lost"
        return await up.alarm.not_ready()

    async def _serve(
        self, stop: asyncio.Event, up: _Running, requeued: int, open_alerts: int
    ) -> None:
        s = self.settings
        alarm, desk, feed = up.alarm, up.alarm.desk, up.feed
        api = _ApiServer(
            uvicorn.Config(
                create_app(up.app_state),
                host=s.api_host,
                port=s.api_port,
                ssl_certfile=s.api_ssl_certfile,
                ssl_keyfile=s.api_ssl_keyfile,
                log_level="warning",
                lifespan="off",
                # Open live streams and requests waiting on the database must not hold the
                # shutdown.
                timeout_graceful_shutdown=5,
            )
        )
        log.info(
            "backend up: %d devices, %d open alerts, %d deliveries to resend",
            len(self.city.devices),
            open_alerts,
            requeued,
        )
        self._started_ms = now_ms()
        # Before the alarm lane publishes anything: what webhooks had in hand or waiting.
        # (Several active workers: each delivers its own changes from now; see
        # docs/scaling.md for what is not resumed.)
        if self.partitions is None:
            await self.webhooks.resume()
        alarm.go()
        pool = self.pool
        async with asyncio.TaskGroup() as tg:

            def task(
                name: str, run: Callable[[], Awaitable[object]], *, recover: bool = False
            ) -> asyncio.Task[None]:
                coro = supervised(name, run, self.metrics, recover=recover)
                return tg.create_task(coro, name=name)

            snapshot_s = s.state_snapshot_ms / 1000
            anchor = AuditAnchor(pool, s.audit_anchor_file, mqtt_publisher(lambda: self.client))
            tasks = [
                task("api", api.serve),
                task("mqtt-session", lambda: self._mqtt_session(up.app_state)),
                task(
                    "ingest",
                    lambda: self.ingest.telemetry.run(
                        feed.committed if self.partitions is None else self._routed(feed),
                        early_ack=self._publish_acks,
                    ),
                ),
                task("rules", feed.run),
                task("rules-acks", feed.acknowledge),
                task("alert-timers", lambda: self._ticks(desk), recover=True),
                task("alert-state", lambda: desk.snapshots(snapshot_s), recover=True),
                task("webhooks", self.webhooks.run),
                task(
                    "storage-maintenance",
                    lambda: run_maintenance(pool, registry=self.metrics.registry),
                    recover=True,
                ),
                task("loop-lag", self._loop_lag, recover=True),
                task("alarm-lane", lambda: self._watch(alarm)),
                # The audit chain's head, to the anchor file and anju/audit/head (issue 10).
                task("audit-anchor", anchor.run, recover=True),
            ]
            if self._lead is not None and s.worker_group is not None:
                group, lead = s.worker_group, self._lead
                tasks.append(task("worker-lead", lambda: hold_lead(lead, group)))
            if self.partitions is not None:
                parts = self.partitions
                tasks.append(task("partitions", parts.run))
                tasks.append(task("handoff", lambda: self._take_handed(desk), recover=True))
                actions = up.app_state.actions
                assert actions is not None
                tasks.append(task("alert-requests", actions.serve, recover=True))
            # Everything built so far lives as long as the process: out of the garbage
            # collector's way (a full collection over the registry and every device's
            # state otherwise stalls the loop for 100-300 ms every few seconds).
            gc.collect()
            gc.freeze()
            await stop.wait()
            log.info("stopping")
            api.should_exit = True
            ingest = next(t for t in tasks if t.get_name() == "ingest")
            await self.ingest.telemetry.stop(ingest)  # the flush in hand, to the rules
            for t in tasks[1:]:
                if t is ingest:
                    continue
                if t.get_name() == "rules":
                    feed.close()  # it finishes what was committed, then returns
                else:
                    t.cancel()
        # Committed records the rules have not seen yet; then the alarm lane stores every
        # change and every rule state (for the next start) and stops.
        await feed.drain()
        alarm.stop()
        try:
            await asyncio.wait_for(waited(alarm.finished), _ALARM_STOP_S)
        except TimeoutError:
            log.error(
                "the alarm lane did not finish storing within %d s (is the database away?);"
                " stopping without it",
                _ALARM_STOP_S,
            )

    @staticmethod
    async def _watch(alarm: AlarmLane) -> None:
        """Fails (and so stops the backend) if the alarm lane fails."""
        await waited(alarm.finished)
        raise RuntimeError("the alarm lane stopped")

    async def _migrate_when_reachable(self, stop: asyncio.Event) -> bool:
        """Apply migrations, waiting (with backoff) for the database; False if stopped first."""
        delays = backoff(0.5, 10.0)
        while not stop.is_set():
            try:
                await asyncio.to_thread(
                    migrate,
                    self.settings.database_url,
                    prefer=parse_storage(self.settings.storage),
                )
                return True
            except psycopg.OperationalError as exc:
                delay = next(delays)
                first = str(exc).strip().splitlines()[0]
                log.warning("waiting for the database (%s); again in %.1f s", first, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        return False

    # ---- MQTT -----------------------------------------------------------------------------

    async def _mqtt_session(self, app_state: AppState) -> None:
        """The main session: the gateways' batches (but events) and states in."""

        def up(client: aiomqtt.Client) -> None:
            self.client = client
            app_state.mqtt_connected = True
            self.metrics.mqtt_connected.set(1)
            self._main_subscribed.set()
            if self._events_subscribed.is_set():
                self.started.set()  # subscribed: what gateways send reaches the rules

        def down() -> None:
            self.client = None
            app_state.mqtt_connected = False
            self.metrics.mqtt_connected.set(0)

        up_topic = UP_SUBSCRIPTION
        if self.partitions is not None:
            up_topic = f"$share/{self.settings.worker_group}/{up_topic}"
        await keep_session(
            self.settings,
            self.settings.client_id,
            [up_topic, STATE_SUBSCRIPTION],
            self._receive,
            on_up=up,
            on_down=down,
            what="main session",
        )

    def _events_up(self) -> None:
        self._events_subscribed.set()
        if self._main_subscribed.is_set():
            self.started.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            topic = msg.topic.value
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            if topic.endswith("/up"):
                await self.ingest.submit(topic, payload)
            elif topic.endswith("/state"):
                await self._gateway_state(topic, payload)

    async def _gateway_state(self, topic: str, payload: bytes) -> None:
        gw = topic.split("/")[2]
        try:
            doc = json.loads(payload) if payload else {"online": False}
            online = bool(doc["online"])
        except (ValueError, KeyError, TypeError):
            self.metrics.rejected.labels("bad_state").inc()
            return
        if self.partitions is not None and not self.partitions.owns(
            self.city.gateway_community.get(gw)
        ):
            # Another worker's partition: its owner records it. Kept, for when this worker
            # takes the partition (a retained state comes once, at subscription).
            self._gateway_states[gw] = payload
            return
        await self._gateway_changed(gw, online, doc.get("boot"))

    async def _gateway_changed(self, gw: str, online: bool, boot: object) -> None:
        # A heartbeat that changes nothing is DEBUG: INFO carries what an operator acts on.
        changed = self._gateways_online.get(gw) != online
        self._gateways_online[gw] = online
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "gateway %s is %s",
            gw,
            "online" if online else "OFFLINE",
        )
        self.desk.gateway_state(gw, online)
        try:
            async with self.store.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO gateway_status (gateway_id, online, boot_id, updated_at)"
                    " VALUES (%s, %s, %s, now()) ON CONFLICT (gateway_id) DO UPDATE SET"
                    " online = excluded.online,"
                    " boot_id = coalesce(excluded.boot_id, gateway_status.boot_id),"
                    " updated_at = excluded.updated_at",
                    (gw, online, boot),
                )
        except psycopg.Error as exc:
            log.warning("could not record the state of gateway %s: %s", gw, exc)

    # ---- after a commit and the rules (feed.RuleFeed): acknowledge ------------------------

    async def _publish_acks(self, acks: dict[str, list[int]]) -> None:
        client = self.client
        if client is not None:
            # Unconfirmed records come again; they are dropped as duplicates and acked then.
            with contextlib.suppress(aiomqtt.MqttError):
                await publish_acks(client, acks)

    # ---- several active workers (backend.partitions, backend.handoff) ----------------------

    def _split(self, records: list[Record]) -> tuple[list[Record], dict[int, list[Record]]]:
        """The records this worker evaluates, and the others by partition (any thread)."""
        parts = self.partitions
        assert parts is not None
        owned, of = parts.owned, self.city.gateway_community
        mine: list[Record] = []
        theirs: dict[int, list[Record]] = {}
        for r in records:
            community = of.get(r.gateway_id)
            p = parts.of(community) if community is not None else None
            if p is None or p in owned:
                mine.append(r)  # (a gateway not in the registry: stored, no rules anywhere)
            else:
                theirs.setdefault(p, []).append(r)
        return mine, theirs

    def _routed(self, feed: RuleFeed) -> OnCommitted:
        """The telemetry lane's ``on_committed`` with several active workers: what another
        worker's partitions own is handed over (before the acknowledgement), the rest goes to
        this worker's rules."""
        group = self.settings.worker_group
        assert group is not None

        async def committed(new: list[Record], acks: dict[str, list[int]]) -> None:
            await feed.committed(await keep_mine(self.pool, group, self._split, new), acks)

        return committed

    async def _adopt(self, partition: int, communities: list[str]) -> None:
        """A partition taken: its open alerts and rule states into the engine, its alert
        changes left unpublished to the delivery; then it counts as owned."""
        city = self.city
        wanted = set(communities)
        devices = [d for d in city.devices.values() if d.community_id in wanted]
        keys = [d.id for d in devices] + sorted(
            {f"building:{d.community_id}/{d.building}" for d in devices if d.building is not None}
        )
        alerts = await until_done(
            lambda: self.store.load_open(city, communities), "load a partition's alerts", log
        )
        docs = await until_done(
            lambda: self.store.load_states(keys), "load a partition's rule states", log
        )
        engine = self.engine
        # Held-open timers of states loaded at this worker's start are re-armed, as after a
        # restart (their readings may be hours old); a partition taken over from a worker that
        # just left carries on with its timers as they were.
        starting = now_ms() - self._started_ms < 10_000

        def rearm() -> None:
            if starting:
                rearm_held_open([engine.states[d.id] for d in devices], now_ms())

        self.desk.adopt(alerts, docs, rearm)
        await asyncio.wrap_future(self.alarm.adopt(communities))
        # The gateways' last states (a retained "offline" came before anyone owned them).
        for gw, com in list(city.gateway_community.items()):
            if com in wanted and gw in self._gateway_states:
                payload = self._gateway_states.pop(gw)
                doc = json.loads(payload) if payload else {"online": False}
                await self._gateway_changed(gw, bool(doc["online"]), doc.get("boot"))
        log.info(
            "partition %d: %d communities, %d open alerts, %d rule states",
            partition,
            len(communities),
            len(alerts),
            len(docs),
        )

    async def _take_handed(self, desk: AlertDesk) -> None:
        """Evaluate what other workers handed over for this worker's partitions, in order,
        each row deleted with the rule state of its evaluation; woken by their NOTIFY."""
        parts = self.partitions
        group = self.settings.worker_group
        assert parts is not None and group is not None
        conn = await psycopg.AsyncConnection.connect(self.settings.database_url, autocommit=True)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(group))))
            while True:
                owned = sorted(parts.owned)
                rows = []
                if owned:
                    async with self.pool.connection() as c:
                        rows = await take(c, owned)
                if rows:
                    saved = [await desk.evaluate_when_room(recs, [i]) for i, recs in rows]
                    for one in saved:
                        await one.wait()
                    continue
                async for _ in conn.notifies(timeout=0.5, stop_after=1):
                    pass
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _loop_lag(self, period: float = 0.02) -> None:
        """Measure how late the loop wakes a task that is due (``anju_loop_lag_seconds``)."""
        while True:
            due = time.perf_counter() + period
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, time.perf_counter() - due))

    async def _ticks(self, desk: AlertDesk) -> None:
        period = self.settings.tick_ms / 1000
        every = max(1, round(1.0 / period))  # liveness and deadlines about once a second
        n = 0
        while True:
            await asyncio.sleep(period)
            n += 1
            await desk.tick(liveness=n % every == 0)


# Doors left open when the backend last stopped: their held-open timers count from this start
# at the earliest (a grace period of one limit), so a restart does not raise them at once on
# readings that may be hours old (issue 13, item 8). Other timers (trapped) run on.
HELD_OPEN_TIMERS = frozenset(
    {"access.door_held_open", "fire.door_held_open", "elevator.door_held_open"}
)


def rearm_held_open(states: Iterable[DeviceState], now_ms: int) -> None:
    for st in states:
        for key in HELD_OPEN_TIMERS & st.since.keys():
            st.since[key] = max(st.since[key], now_ms)


def run_backend(settings: BackendSettings) -> None:
    """Run until SIGTERM or SIGINT; refuse an API that would fail open (issue 13)."""
    check_api_access(settings, load_alerting(settings.alerting))
    if not load_alerting(settings.alerting).tokens and settings.api_token is None:
        log.warning(
            "the API has no tokens: every caller on %s is admin (development only)",
            settings.api_host,
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Backend(settings).run(stop)

    # The alarm lane's thread waits for the interpreter lock at each step of its path: hand
    # it over every millisecond rather than every five.
    sys.setswitchinterval(0.001)
    asyncio.run(main())
