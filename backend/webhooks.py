"""Webhooks: alert changes POSTed to departments' and companies' own systems.

Each configured webhook (``AlertingConfig.webhooks``) names an audience and a scope and
receives exactly the changes published to that audience's topic, as the JSON payload of
PROTOCOL.md section 2, with headers

- ``X-Anju-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>``
- ``X-Anju-Timestamp: <unix seconds>`` (receivers should refuse old timestamps: replays)
- ``X-Anju-Delivery: <audit entry number>`` (the same change may arrive twice; de-duplicate).

Each webhook's worker takes changes in audit order and records how far it got
(``webhook_progress``), so that a restart queues again what was in hand or waiting (the
receiver may then get a change twice: ``X-Anju-Delivery`` tells).

A 2xx answer is success. Anything else is retried with the shared backoff helper up to
``max_attempts``; then the change goes to the dead-letter table ``webhook_dead_letters``, which
the API lists and replays (``/api/webhooks/dead-letters``). Each webhook has its own bounded
queue and worker, so one dead endpoint never delays another.

Overflow policy ("shed", ``anju_backend_queue_overflow{queue="webhook:NAME", policy="shed"}``;
depth and bound in ``anju_backend_queue_depth`` and ``_capacity``): ``offer`` never waits
(it runs on the publishing path). When a webhook's queue (``queue_max`` changes) is full, the
change is not kept in memory: it is in the audit log already (``alert_audit``), so the webhook
only remembers the range of audit numbers it left there, and so does every change after it
until the worker has caught up. Once its queue is empty the worker reads that range back, in
audit order, ``page`` at a time (those of its audience and scope), then takes offers again.
Memory per webhook is its queue plus two numbers; a slow receiver gets every change late, in
order, never dropped (a restart meanwhile resumes from ``webhook_progress`` as above).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx
from prometheus_client import Counter
from psycopg.types.json import Jsonb

from anju.backoff import backoff
from backend.config import WebhookSpec
from backend.db.retry import until_done
from backend.metrics import BackendMetrics
from backend.store import AlertStore, Pending

log = logging.getLogger("anju.webhooks")
QUEUE_MAX = 1_000


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def wanted(spec: WebhookSpec, payload: dict[str, Any]) -> bool:
    return any(
        a["audience"] == spec.audience and a["scope"] == spec.scope
        for a in payload.get("audiences", [])
    )


class Webhooks:
    def __init__(
        self,
        specs: list[WebhookSpec],
        store: AlertStore,
        metrics: BackendMetrics,
        *,
        base_delay_s: float = 0.5,
        queue_max: int = QUEUE_MAX,
        page: int = 100,
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.store = store
        self.base_delay_s = base_delay_s
        self.page = max(1, min(page, queue_max))
        self.queues: dict[str, asyncio.Queue[Pending]] = {
            s.name: asyncio.Queue(queue_max) for s in specs
        }
        r = metrics.registry
        self.sent = Counter("anju_webhook_sent", "Webhook deliveries", ["webhook"], registry=r)
        self.dead = Counter(
            "anju_webhook_dead_letters", "Changes given up on", ["webhook", "reason"], registry=r
        )
        # Per webhook, what it left in the audit log while its queue was full: the entries
        # numbered above [0] and at most [1] (those it wants), to read back in order.
        self._behind: dict[str, list[int]] = {}
        self._depth = {s.name: metrics.queue_depth.labels(f"webhook:{s.name}") for s in specs}
        self._shed = {
            s.name: metrics.queue_overflow.labels(f"webhook:{s.name}", "shed") for s in specs
        }
        for s in specs:
            metrics.queue_capacity.labels(f"webhook:{s.name}").set(queue_max)

    def offer(self, pending: Pending) -> None:
        for name, spec in self.specs.items():
            if wanted(spec, pending.payload):
                self._queue(name, pending)

    async def run(self) -> None:
        if not self.specs:
            await asyncio.Event().wait()  # nothing to do; cancelled at shutdown
        async with httpx.AsyncClient() as client, asyncio.TaskGroup() as tg:
            for name in self.specs:
                tg.create_task(self._worker(client, name), name=f"webhook-{name}")

    async def resume(self) -> int:
        """Before anything is offered: queue again what each webhook had not finished when
        the backend last stopped (entries published over MQTT beyond its ``done_upto``; those
        not yet published are offered when they are). A webhook seen for the first time
        starts from now. Returns how many were queued."""
        if not self.specs:
            return 0
        names = list(self.specs)
        async with self.store.pool.connection() as conn:
            await conn.execute(
                "INSERT INTO webhook_progress (name, done_upto)"
                " SELECT w, (SELECT coalesce(max(n), 0) FROM alert_audit)"
                " FROM unnest(%s::text[]) AS w ON CONFLICT DO NOTHING",
                (names,),
            )
            cur = await conn.execute(
                "SELECT a.n, a.entry -> 'payload', p.name FROM webhook_progress p"
                " JOIN alert_audit a ON a.n > p.done_upto AND a.published"
                " WHERE p.name = ANY(%s) ORDER BY a.n",
                (names,),
            )
            rows = await cur.fetchall()
        queued = 0
        for n, payload, name in rows:
            if wanted(self.specs[name], payload):
                self._queue(name, Pending(int(n), payload))
                queued += 1
        if queued:
            log.info("webhooks: %d deliveries queued again from before the restart", queued)
        return queued

    def _queue(self, name: str, pending: Pending) -> None:
        q = self.queues[name]
        behind = self._behind.get(name)
        if behind is None and not q.full():
            q.put_nowait(pending)
            self._depth[name].set(q.qsize())
            return
        # Shed: left in the audit log, read back in order once the worker has caught up.
        if behind is None:
            self._behind[name] = [pending.n - 1, pending.n]
        else:
            behind[1] = max(behind[1], pending.n)
        self._shed[name].inc()

    async def _read_back(self, name: str) -> None:
        """Queue the next page of what this webhook left in the audit log (its queue is
        empty: nothing else is queued meanwhile but replays, so it stops when full)."""
        after, upto = self._behind[name]
        spec = self.specs[name]

        async def read() -> list[tuple[int, dict[str, Any]]]:
            async with self.store.pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT n, entry -> 'payload' FROM alert_audit WHERE n > %s AND n <= %s"
                    " AND entry -> 'payload' -> 'audiences' @> %s ORDER BY n LIMIT %s",
                    (after, upto, Jsonb([{"audience": spec.audience, "scope": spec.scope}]),
                     self.page),
                )  # fmt: skip
                return [(int(n), p) for n, p in await cur.fetchall()]

        rows = await until_done(read, f"read back webhook {name}'s changes", log)
        q, last, complete = self.queues[name], after, len(rows) < self.page
        for n, payload in rows:
            if q.full():
                complete = False
                break
            q.put_nowait(Pending(n, payload))
            last = n
        self._depth[name].set(q.qsize())
        behind = self._behind[name]
        if not complete:
            behind[0] = last
        elif behind[1] == upto:
            del self._behind[name]  # caught up: offers are queued again
        else:
            behind[0] = upto  # (more were left meanwhile: read on)

    async def _worker(self, client: httpx.AsyncClient, name: str) -> None:
        q = self.queues[name]
        while True:
            if q.empty() and name in self._behind:
                await self._read_back(name)
                continue
            pending = await q.get()
            self._depth[name].set(q.qsize())
            await self.deliver(client, name, pending)
            await self._done(name, pending.n)

    async def _done(self, name: str, n: int) -> None:
        """Record the webhook's progress (never backwards: a replayed dead letter is old)."""

        async def store() -> None:
            async with self.store.pool.connection() as conn:
                await conn.execute(
                    "UPDATE webhook_progress SET done_upto = greatest(done_upto, %s),"
                    " updated_at = now() WHERE name = %s",
                    (n, name),
                )

        await until_done(store, f"record webhook {name}'s progress", log, first_s=0.5, cap_s=30)

    async def deliver(self, client: httpx.AsyncClient, name: str, pending: Pending) -> bool:
        spec = self.specs[name]
        body = json.dumps(pending.payload, ensure_ascii=False).encode()
        delays = backoff(self.base_delay_s, 60.0)
        error = ""
        for attempt in range(1, spec.max_attempts + 1):
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Anju-Signature": signature(spec.secret, ts, body),
                "X-Anju-Timestamp": ts,
                "X-Anju-Delivery": str(pending.n),
            }
            try:
                r = await client.post(
                    spec.url, content=body, headers=headers, timeout=spec.timeout_s
                )
                if 200 <= r.status_code < 300:
                    self.sent.labels(name).inc()
                    return True
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < spec.max_attempts:
                await asyncio.sleep(next(delays))
        log.warning("webhook %s: giving up on entry %d after %s", name, pending.n, error)
        self.dead.labels(name, "attempts").inc()
        await self._dead_letter(name, pending, spec.max_attempts, error)
        return False

    async def _dead_letter(self, name: str, p: Pending, attempts: int, error: str) -> None:
        async def store() -> None:
            async with self.store.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO webhook_dead_letters (webhook, audit_n, payload, attempts, error)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (name, p.n, Jsonb(p.payload), attempts, error),
                )

        what = f"record webhook {name}'s dead letter {p.n}"
        await until_done(store, what, log, first_s=0.5, cap_s=30)

    async def dead_letters(self, *, pending_only: bool = True) -> list[dict[str, Any]]:
        q = (
            "SELECT id, webhook, audit_n, payload, attempts, error, failed_at, replayed_at"
            " FROM webhook_dead_letters"
        )
        if pending_only:
            q += " WHERE replayed_at IS NULL"
        async with self.store.pool.connection() as conn:
            cur = await conn.execute((q + " ORDER BY id").encode())
            cols = [c.name for c in cur.description or []]
            rows = [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]
        for r in rows:
            r["failed_at"] = r["failed_at"].isoformat()
            r["replayed_at"] = r["replayed_at"].isoformat() if r["replayed_at"] else None
        return rows

    async def replay(self, ids: list[int] | None = None) -> int:
        """Queue dead letters again (all pending ones, or those ``ids``); mark them replayed.
        Ones that fail again come back as new dead letters."""
        async with self.store.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE webhook_dead_letters SET replayed_at = now()"
                " WHERE replayed_at IS NULL AND (%s::bigint[] IS NULL OR id = ANY(%s))"
                " RETURNING webhook, audit_n, payload",
                (ids, ids),
            )
            rows = await cur.fetchall()
        n = 0
        for name, audit_n, payload in rows:
            if name in self.queues:
                await self.queues[name].put(Pending(int(audit_n), payload))
                n += 1
        return n
