"""Supervised long-lived tasks (issue 10): never a half-dead backend.

Every long-lived task of the backend runs under ``supervised``. An exception in it is logged
and counted (``anju_backend_task_errors_total{task}``); then either the task starts again
after a backoff (``recover=True``: loops that keep no state of their own between turns, such as
timers, snapshots, loop-lag and storage maintenance), or the exception goes on to the task's
TaskGroup, which stops the backend: ``anju backend run`` exits non-zero and systemd starts it
again. Nothing acknowledged is lost that way: a record is acknowledged only once it is committed
and its rule state stored, and what was not acknowledged the gateway sends again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from anju.backoff import backoff
from backend.metrics import BackendMetrics

log = logging.getLogger("anju.backend")


async def supervised(
    name: str,
    run: Callable[[], Awaitable[object]],
    metrics: BackendMetrics,
    *,
    recover: bool = False,
) -> None:
    """``run()`` under supervision (see the module)."""
    delays = backoff(0.5, 10.0)
    while True:
        try:
            await run()
            return
        except Exception as exc:
            metrics.task_errors.labels(name).inc()
            if not recover:
                log.critical(
                    "task %s failed (%s: %s); the backend stops, to be restarted",
                    name,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
                raise
            delay = next(delays)
            log.error(
                "task %s failed (%s: %s); started again in %.1f s",
                name,
                type(exc).__name__,
                exc,
                delay,
                exc_info=exc,
            )
            await asyncio.sleep(delay)
