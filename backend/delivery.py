"""Alert delivery over MQTT (PROTOCOL.md section 2): QoS 1, not retained, one publish per
audience topic, every change published again on the same topic.

Changes wait in a bounded in-memory queue whose contents are also in the database (the audit
entries not yet marked published), so that a lost connection or a restart never loses one.

Overflow policy ("shed", ``anju_backend_queue_overflow{queue="delivery", policy="shed"}``):
``enqueue`` never waits. When the queue (``maxsize`` changes) is full, the change is left in
the database only (its audit entry, stored before it was offered, stays unpublished), and so
is every change after it until the delivery has caught up: ``run`` sends what is in memory,
then reads the changes left in the database back, in audit order, ``page`` at a time (the
``delivery_reread`` queue), then takes from the queue again. Changes are published in audit
order throughout, each once (plus the QoS 1 repeats of a lost connection). Entries found
unpublished at start are read back the same way. A change read back has no receive time:
``anju_alert_latency_seconds`` leaves it out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable

import aiomqtt
import psycopg
import psycopg_pool
from prometheus_client import Counter

from anju.backoff import backoff
from anju.contract import alert_topic
from anju.uplink import ack_topic, encode_ack
from backend.db.retry import until_done
from backend.metrics import BackendMetrics
from backend.store import AlertStore, Pending

log = logging.getLogger("anju.delivery")


def topics_of(payload: dict[str, object]) -> list[str]:
    auds = payload["audiences"]
    assert isinstance(auds, list)
    return [
        alert_topic(a["audience"], a["scope"], str(payload["community_id"]), str(payload["type"]))
        for a in auds
    ]


class Delivery:
    def __init__(
        self,
        store: AlertStore,
        metrics: BackendMetrics,
        *,
        maxsize: int = 10_000,
        page: int = 1_000,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[Pending, float | None]] = asyncio.Queue(maxsize)
        self.page = page
        # Called with each payload once it is published (webhooks, live stream); must not block.
        self.listeners: list[Callable[[Pending], None]] = []
        self._in_hand: tuple[Pending, float | None] | None = None
        # Changes read back from the database (at most ``page``), sent before the queue.
        self._backlog: deque[tuple[Pending, float | None]] = deque()
        # Changes left in the database: the unpublished audit entries numbered above
        # ``_read_upto`` and at most ``_shed_upto`` (0: none). ``_seen``: the highest number
        # that came into memory (every entry at or below it is in memory, in hand, or
        # published).
        self._read_upto = 0
        self._shed_upto = 0
        self._seen = 0
        self.closing = False
        m = metrics
        self._depth = m.queue_depth.labels("delivery")
        self._reread_depth = m.queue_depth.labels("delivery_reread")
        self._shed = m.queue_overflow.labels("delivery", "shed")
        m.queue_capacity.labels("delivery").set(maxsize)
        m.queue_capacity.labels("delivery_reread").set(page)
        # Audit entries published and not yet marked so (``marks``): the next alert's
        # publish never waits for this bookkeeping.
        self._to_mark: list[int] = []
        self._mark_wake = asyncio.Event()
        # Several active workers (backend.partitions): the communities this worker publishes
        # for; what it reads back is theirs only. None: every community.
        self.communities: Callable[[], list[str]] | None = None

    async def enqueue(self, pending: Pending, rx_ms: int | None = None) -> None:
        """Queue a stored change (its audit entry committed); never waits, never drops: over
        the bound it stays in the database and is read back in order (module docstring)."""
        if not self._shed_upto and not self.queue.full():
            self.queue.put_nowait((pending, rx_ms / 1000 if rx_ms else None))
            self._seen = max(self._seen, pending.n)
            self._depth.set(self.queue.qsize())
            return
        if not self._shed_upto:
            self._read_upto = self._seen
        self._shed_upto = max(self._shed_upto, pending.n)
        self._shed.inc()

    def close(self) -> None:
        """At shutdown (``enqueue`` never waits: nothing to release)."""
        self.closing = True

    async def adopt(self, communities: list[str]) -> int:
        """A partition taken over (several active workers): its entries left unpublished by
        the worker that had it, queued as this worker's own (``enqueue``: over the bound
        they stay in the database and are read back in order, once); call on the delivery's
        loop."""
        after, count = 0, 0
        while True:

            async def read(after: int = after) -> list[Pending]:
                return await self.store.unpublished(
                    after=after, limit=self.page, communities=communities
                )

            rows = await until_done(read, "read back a partition's alert changes", log)
            for p in rows:
                await self.enqueue(p)
            count += len(rows)
            if len(rows) < self.page:
                break
            after = rows[-1].n
        return count

    async def requeue_unpublished(self) -> int:
        """At start, before ``run``: the entries left unpublished, to read back first."""
        count, top = await self.store.unpublished_extent()
        if count:
            self._read_upto, self._shed_upto = 0, max(self._shed_upto, top)
        return count

    async def _next(self) -> tuple[Pending, float | None]:
        """The next change in audit order: read back, queued, or left in the database."""
        while True:
            if self._backlog:
                item = self._backlog.popleft()
                self._reread_depth.set(len(self._backlog))
                return item
            if not self.queue.empty() or not self._shed_upto:
                item = await self.queue.get()
                self._depth.set(self.queue.qsize())
                return item
            await self._read_back()

    async def _read_back(self) -> None:
        upto = self._shed_upto
        after = self._read_upto
        scope = self.communities() if self.communities is not None else None

        async def read() -> list[Pending]:
            return await self.store.unpublished(
                after=after, upto=upto, limit=self.page, communities=scope
            )

        rows = await until_done(read, "read back alert changes to deliver", log)
        self._backlog.extend((p, None) for p in rows)
        self._reread_depth.set(len(self._backlog))
        if len(rows) < self.page:
            self._read_upto = upto  # every entry up to it read (or published meanwhile)
            if self._shed_upto == upto:  # (else more were left meanwhile: read on)
                self._shed_upto = 0
        else:
            self._read_upto = rows[-1].n
        self._seen = max(self._seen, self._read_upto)

    async def run(self, client: aiomqtt.Client) -> None:
        """Publish queued changes; on a lost connection the item in hand is kept for the next
        session (the caller re-runs this with a new client)."""
        while True:
            if self._in_hand is None:
                self._in_hand = await self._next()
            pending, rx = self._in_hand
            body = json.dumps(pending.payload, ensure_ascii=False).encode()
            # All audiences at once (each publish waits for its PUBACK); MqttError: the change
            # is kept in hand and sent again to every audience (QoS 1: at least once).
            topics = topics_of(pending.payload)
            await asyncio.gather(*(client.publish(t, body, qos=1) for t in topics))
            self._in_hand = None
            self._to_mark.append(pending.n)
            self._mark_wake.set()
            if rx is not None:
                self.metrics.alert_latency.observe(max(0.0, time.time() - rx))
            for listener in self.listeners:
                listener(pending)

    async def marks(self) -> None:
        """Mark published entries, in batches, until cancelled (then ``flush_marks``)."""
        while True:
            await self._mark_wake.wait()
            self._mark_wake.clear()
            await self.flush_marks()

    async def flush_marks(self) -> None:
        """Bookkeeping after delivery; a database that is away is waited for (the changes
        were delivered: at worst they are delivered again after a restart)."""
        delays = backoff(0.2, 5.0)
        while self._to_mark:
            ns, self._to_mark = self._to_mark, []
            try:
                await self.store.mark_published(ns)
            except asyncio.CancelledError:
                self._to_mark = ns + self._to_mark  # for the flush at shutdown
                raise
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                self._to_mark = ns + self._to_mark
                delay = next(delays)
                log.warning(
                    "could not mark %d audit entries published (%s); again in %.1f s",
                    len(ns),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)


class LiveHub:
    """Alert changes for live screens (SSE). Each client has a bounded queue; when a slow
    client's queue is full its oldest change is dropped (counted in
    ``anju_alert_live_dropped``): a screen can reload the list from the API, a publisher must
    never wait for a screen."""

    def __init__(self, metrics: BackendMetrics, *, per_client: int = 256) -> None:
        self.per_client = per_client
        self.clients: set[asyncio.Queue[dict[str, object]]] = set()
        self.dropped = Counter(
            "anju_alert_live_dropped",
            "Alert changes dropped for a slow live-stream client",
            registry=metrics.registry,
        )

    def offer(self, pending: Pending) -> None:
        payload = pending.payload
        for q in self.clients:
            if q.full():
                q.get_nowait()
                self.dropped.inc()
            q.put_nowait(payload)

    def subscribe(self) -> asyncio.Queue[dict[str, object]]:
        q: asyncio.Queue[dict[str, object]] = asyncio.Queue(self.per_client)
        self.clients.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, object]]) -> None:
        self.clients.discard(q)


async def publish_acks(client: aiomqtt.Client, acks: dict[str, list[int]]) -> None:
    await asyncio.gather(
        *(client.publish(ack_topic(gw), encode_ack(seqs), qos=1) for gw, seqs in acks.items())
    )
