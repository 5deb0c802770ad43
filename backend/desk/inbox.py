"""The hand-over between threads: work put from any thread for a task on one event loop,
and futures that any loop can wait for."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
from typing import TypeVar

T = TypeVar("T")


async def waited(f: cf.Future[T]) -> T:
    """Wait for a future that another thread completes, without cancelling it when this task
    is cancelled (others may wait for the same future, and its thread must still be able to
    complete it)."""
    return await asyncio.shield(asyncio.wrap_future(f))


def done_future() -> cf.Future[None]:
    f: cf.Future[None] = cf.Future()
    f.set_result(None)
    return f


class LoopInbox:
    """Work handed to a task on one event loop from any thread: ``wake`` it after adding."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def bind(self) -> None:
        """Call on the loop that does the work, before anyone hands it any."""
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        loop, event = self.loop, self.event
        assert loop is not None and event is not None, "bind() first"
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        assert self.event is not None, "bind() first"
        await self.event.wait()
        self.event.clear()
