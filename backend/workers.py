"""Several backend workers (issue 11, docs/scaling.md): one leads, the others stand by.

``anju backend run`` started N times with the same ``worker_group`` (``ANJU_WORKER_GROUP``):
each worker first waits for the group's PostgreSQL session advisory lock. The holder runs the
whole backend (subscriptions, ingest, rules, timers, delivery); the others wait, polling every
``POLL_S``. No coordinator of our own: the lock is PostgreSQL's, and it is released when the
holder's connection ends, which is at once for a worker killed on a live machine (its socket
is closed by the kernel) and within the server's TCP keepalive for a machine that vanished.

The holder checks its lock connection every ``CHECK_S``; if the connection is lost (database
restart, network), the lock may already be someone else's, so the worker stops at once
(``os._exit``: fencing by leaving), as if killed: what it did not acknowledge the gateways send
again, and the next leader starts from the stored state.

The workers of a group share one MQTT identity (``client_id``, hence one broker user and one
persistent session): only the leader is connected, and the next leader resumes the session,
with what the broker queued for it meanwhile (an alarm sent during the takeover included).

With ``worker_group`` unset (the default) none of this runs: the backend is as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os

import psycopg
from psycopg.conninfo import make_conninfo

from anju.backoff import backoff

log = logging.getLogger("anju.workers")

POLL_S = 0.5  # a standby tries the lock this often
CHECK_S = 1.0  # the leader checks its lock connection this often
CHECK_TIMEOUT_S = 5.0  # ... and leaves when it does not answer in this (under the server's ~11 s)
LOST_EXIT_CODE = 3


def group_lock_key(group: str) -> int:
    """The group's advisory lock: a signed 64-bit number from its name (stable everywhere)."""
    digest = hashlib.sha256(b"anju-worker-group:" + group.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def wait_for_lead(
    database_url: str, group: str, stop: asyncio.Event
) -> psycopg.AsyncConnection | None:
    """Wait until this worker holds the group's lock; the connection that holds it (keep it
    open as long as the lead), or None if ``stop`` came first."""
    key = group_lock_key(group)
    # (TCP keepalives: the client side notices a dead server or network in seconds.)
    delays = backoff(0.5, 5.0)
    announced = False
    while not stop.is_set():
        conn: psycopg.AsyncConnection | None = None
        try:
            conninfo = make_conninfo(
                database_url,
                application_name=f"anju-lead-{group}",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=2,
            )
            conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            delays = backoff(0.5, 5.0)
            while not stop.is_set():
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                row = await cur.fetchone()
                if row and row[0]:
                    log.info("worker %d leads group %s", os.getpid(), group)
                    return conn
                if not announced:
                    log.info("worker %d stands by: group %s has a leader", os.getpid(), group)
                    announced = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_S)
        except psycopg.OperationalError as exc:
            delay = next(delays)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc
            log.warning("standby: database unavailable (%s); again in %.1f s", first, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
    return None


async def hold_lead(conn: psycopg.AsyncConnection, group: str) -> None:
    """Check the lock connection until cancelled; leave the process if it is lost."""
    while True:
        await asyncio.sleep(CHECK_S)
        try:
            await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_TIMEOUT_S)
        except (psycopg.Error, TimeoutError) as exc:
            log.critical(
                "lost the lock connection of group %s (%s): another worker may lead now;"
                " leaving at once",
                group,
                exc or type(exc).__name__,
            )
            logging.shutdown()
            os._exit(LOST_EXIT_CODE)
