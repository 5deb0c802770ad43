"""Several active workers (issue 11, docs/scaling.md, "Several active workers"): the city's
communities hashed into partitions, each evaluated by the one worker holding its advisory lock.

``anju backend run --group G --shared`` started N times: every worker receives through the
broker's shared subscription (any dispatch, round robin included) and stores what it receives
(exactly once: the ``ingest_seen`` row locks); the rules of a community run on the worker that
owns its partition. A worker owns a partition while its lock connection holds the partition's
session advisory lock; it takes free partitions up to its share, ``ceil(partitions / workers
alive)``, every ``POLL_S`` (workers alive: the lock connections of the group, by application
name, in ``pg_stat_activity``). A killed worker's connection ends, its locks are freed, and the
others take its partitions within about a second (plus the time to load their state). A
worker whose lock connection is lost leaves at once (``os._exit``, as the failover group's
leader does), since its partitions may already be someone else's.

Partitions are by community, not by gateway: storms (community summaries) and the two-trigger
fire confirmation (a building) stay within one evaluator.

A worker never gives a partition up while it runs (a worker that joins later takes only free
partitions: after a restart it receives and stores, and evaluates what it is given when
another worker leaves); a clean stop stores everything, then closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import zlib
from collections.abc import Awaitable, Callable, Iterable

import psycopg
from psycopg.conninfo import make_conninfo

from backend.workers import CHECK_S, CHECK_TIMEOUT_S, LOST_EXIT_CODE

log = logging.getLogger("anju.workers")

POLL_S = 1.0  # partitions are looked at this often (and the connection checked)
SETTLE_S = 1.5  # after joining, before taking partitions: workers started together see each other
DEFAULT_PARTITIONS = 16


def _leave() -> None:
    logging.shutdown()
    os._exit(LOST_EXIT_CODE)


def partition_of(community_id: str, partitions: int) -> int:
    """The partition of a community (stable everywhere: CRC-32 of its id)."""
    return zlib.crc32(community_id.encode()) % partitions


def partition_key(group: str, partition: int) -> int:
    """The advisory lock of one partition of a group: a signed 64-bit number."""
    digest = hashlib.sha256(f"anju-partition:{group}:{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def application_name(group: str) -> str:
    return f"anju-part:{group}"


class Partitions:
    """This worker's partitions. ``owned`` is read from any thread (a frozenset, replaced
    whole); ``run`` takes partitions and calls ``adopt`` for each before it counts as owned
    (load its state), then ``owned_changed``."""

    def __init__(
        self,
        database_url: str,
        group: str,
        count: int,
        communities: Iterable[str],
        *,
        adopt: Callable[[int, list[str]], Awaitable[None]],
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        """``on_lost``: the lock connection is lost (default: leave the process at once)."""
        self.database_url = database_url
        self.group = group
        self.count = count
        self.adopt = adopt
        self.on_lost = on_lost or _leave
        self.owned: frozenset[int] = frozenset()
        self.adopting: frozenset[int] = frozenset()  # taken, its state being loaded
        self.by_partition: dict[int, list[str]] = {p: [] for p in range(count)}
        self._of: dict[str, int] = {}
        for c in communities:
            p = partition_of(c, count)
            self.by_partition[p].append(c)
            self._of[c] = p
        self.conn: psycopg.AsyncConnection | None = None
        self.taking = asyncio.Event()  # set once the first look at the partitions is done

    def of(self, community_id: str) -> int:
        p = self._of.get(community_id)
        return partition_of(community_id, self.count) if p is None else p

    def owns(self, community_id: str | None) -> bool:
        return community_id is not None and self.of(community_id) in self.owned

    @property
    def communities(self) -> list[str]:
        """The communities whose alerts this worker publishes: of the partitions it owns or
        is taking (their unpublished changes are queued while it takes them)."""
        return [c for p in sorted(self.owned | self.adopting) for c in self.by_partition[p]]

    async def connect(self) -> None:
        conninfo = make_conninfo(
            self.database_url,
            application_name=application_name(self.group),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )
        self.conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()
            self.conn = None

    async def run(self) -> None:
        """Take partitions up to this worker's share, for ever; leave the process if the lock
        connection is lost."""
        if self.conn is None:
            await self.connect()
        async with asyncio.TaskGroup() as tg:
            # The lock connection checked every second, also while a partition's state
            # loads: a worker whose locks may be someone else's leaves within about a second.
            tg.create_task(self._watch(), name="partition-locks")
            await asyncio.sleep(SETTLE_S)
            while True:
                await self._look()
                self.taking.set()
                await asyncio.sleep(POLL_S)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(CHECK_S)
            await self._ask("SELECT %s::int", 1)

    async def _ask(self, query: str, param: object) -> object:
        """One value from the lock connection, which must answer within ``CHECK_TIMEOUT_S``:
        otherwise the locks may be someone else's already, and the worker leaves at once."""
        conn = self.conn
        assert conn is not None
        try:
            cur = await asyncio.wait_for(conn.execute(query, (param,)), CHECK_TIMEOUT_S)
            row = await cur.fetchone()
        except (psycopg.Error, TimeoutError) as exc:
            log.critical(
                "lost the partition lock connection of group %s (%s): its partitions may be"
                " another worker's now; leaving at once",
                self.group,
                exc or type(exc).__name__,
            )
            self.owned = self.adopting = frozenset()
            self.on_lost()
            raise ConnectionError("the partition lock connection is lost") from exc
        return row[0] if row else None

    async def _look(self) -> None:
        found = await self._ask(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            application_name(self.group),
        )
        alive = max(1, int(found) if isinstance(found, int) else 1)
        share = math.ceil(self.count / alive)
        # Start the search at a place of our own, so workers do not all try the same first.
        start = os.getpid() % self.count
        for i in range(self.count):
            if len(self.owned) >= share:
                return
            p = (start + i) % self.count
            if p in self.owned:
                continue
            if not await self._ask("SELECT pg_try_advisory_lock(%s)", partition_key(self.group, p)):
                continue
            communities = self.by_partition[p]
            log.info(
                "worker %d takes partition %d of group %s (%d communities)",
                os.getpid(),
                p,
                self.group,
                len(communities),
            )
            self.adopting = frozenset({p})
            await self.adopt(p, communities)
            self.owned = self.owned | {p}
            self.adopting = frozenset()


__all__ = ["DEFAULT_PARTITIONS", "Partitions", "partition_of"]
