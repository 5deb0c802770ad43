"""Alert delivery over MQTT (PROTOCOL.md section 2): QoS 1, not retained, one publish per
audience topic, every change published again on the same topic.

Changes wait in a bounded in-memory queue whose contents are also in the database (the audit
entries not yet marked published), so that a lost connection or a restart never loses one.
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
        self, store: AlertStore, metrics: BackendMetrics, *, maxsize: int = 10_000
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[Pending, float | None]] = asyncio.Queue(maxsize)
        # Called with each payload once it is published (webhooks, live stream); must not block.
        self.listeners: list[Callable[[Pending], None]] = []
        self._in_hand: tuple[Pending, float | None] | None = None
        # Entries found unpublished in the database at start: sent first, not bounded by the
        # queue (nothing consumes the queue yet when they are loaded).
        self._backlog: deque[tuple[Pending, float | None]] = deque()
        self.closing = False  # ``close``: a full queue no longer makes anyone wait
        self._closed = asyncio.Event()
        # Audit entries published and not yet marked so (``marks``): the next alert's
        # publish never waits for this bookkeeping.
        self._to_mark: list[int] = []
        self._mark_wake = asyncio.Event()

    async def enqueue(self, pending: Pending, rx_ms: int | None = None) -> None:
        # Blocks when full (back-pressure on the rules), never drops: the entry is in the DB.
        # While stopping it does not wait: an entry left out is sent after the restart.
        item = (pending, rx_ms / 1000 if rx_ms else None)
        try:
            self.queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            if self.closing:
                return
        put = asyncio.ensure_future(self.queue.put(item))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({put, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()  # (no effect once done)
            closed.cancel()

    def close(self) -> None:
        """At shutdown: whoever waits for room in the queue stops waiting."""
        self.closing = True
        self._closed.set()

    async def requeue_unpublished(self) -> int:
        items = await self.store.unpublished()
        self._backlog.extend((p, None) for p in items)
        return len(items)

    async def run(self, client: aiomqtt.Client) -> None:
        """Publish queued changes; on a lost connection the item in hand is kept for the next
        session (the caller re-runs this with a new client)."""
        while True:
            if self._in_hand is None:
                if self._backlog:
                    self._in_hand = self._backlog.popleft()
                else:
                    self._in_hand = await self.queue.get()
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
