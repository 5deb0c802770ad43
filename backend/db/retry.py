"""Waiting out a database that is away: what must be stored is retried, never dropped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import psycopg_pool

from anju.backoff import backoff

T = TypeVar("T")

UNAVAILABLE = (psycopg.OperationalError, psycopg_pool.PoolTimeout)


async def until_done(
    op: Callable[[], Awaitable[T]],
    what: str,
    log: logging.Logger,
    *,
    first_s: float = 0.2,
    cap_s: float = 5.0,
    level: int = logging.WARNING,
) -> T:
    """``op()`` again, with capped jittered backoff, for as long as the database is
    unavailable (each wait logged as "could not <what>"); any other error is the caller's."""
    delays = backoff(first_s, cap_s)
    while True:
        try:
            return await op()
        except UNAVAILABLE as exc:
            delay = next(delays)
            log.log(level, "could not %s (%s); again in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)
