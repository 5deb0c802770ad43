"""The hand-over between threads: ``Inbox``, work put from any thread for a task on one event
loop, typed and bounded; and futures that any loop can wait for."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from backend.metrics import BackendMetrics

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


def _one(_item: object) -> int:
    return 1


def _release(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]) -> None:
    def release() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        release()
    else:
        with contextlib.suppress(RuntimeError):  # (its loop closed meanwhile)
            loop.call_soon_threadsafe(release)


class Inbox(Generic[T]):
    """Items of type ``T`` handed from any thread to one task on one event loop.

    - ``put`` (any thread) never blocks and never drops: it is called with the engine's lock
      held, where waiting is not allowed. It wakes the consumer.
    - ``room`` (any loop) waits while the depth is at or over ``capacity``: a producer that
      must not outrun the consumer awaits it *before* taking the engine's lock, so a full
      inbox slows the producer down instead of losing anything or holding the lock. Each such
      wait counts once in ``anju_backend_queue_overflow{queue=name, policy="wait"}``. The
      depth can pass ``capacity`` only by what producers that found room at the same moment
      then put (one hand-over each).
    - with ``merge``, an item put while another waits is merged into it (``merge(old, new)``,
      e.g. snapshots by key): then the depth is bounded by what can be merged, not by time.
    - the consumer ``bind``s it on its loop, ``wait``s, and takes items with ``head`` and
      ``pop`` (an item in hand still counts until it is popped) or ``take``.

    The depth is the sum of ``size(item)`` (e.g. alert changes, not batches), reported in
    ``anju_backend_queue_depth{queue=name}``, the bound in ``anju_backend_queue_capacity``.
    """

    def __init__(
        self,
        name: str,
        capacity: int,
        metrics: BackendMetrics | None = None,
        *,
        size: Callable[[T], int] = _one,
        merge: Callable[[T, T], T] | None = None,
    ) -> None:
        assert capacity > 0
        self.name = name
        self._size = size
        self._merge = merge
        self._guard = threading.Lock()
        self._items: deque[T] = deque()
        self._depth = 0
        self._room: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self.closed = False
        self._metrics = metrics
        self._depth_gauge = metrics.queue_depth.labels(name) if metrics is not None else None
        self._waits = metrics.queue_overflow.labels(name, "wait") if metrics is not None else None
        self.capacity = capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = value
        if self._metrics is not None:
            self._metrics.queue_capacity.labels(self.name).set(value)

    @property
    def depth(self) -> int:
        return self._depth

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return self._depth >= self._capacity

    # ---- producers (any thread) ------------------------------------------------------------

    def put(self, item: T) -> None:
        with self._guard:
            if self._merge is not None and self._items:
                old = self._items[-1]
                self._depth -= self._size(old)
                item = self._items[-1] = self._merge(old, item)
            else:
                self._items.append(item)
            self._depth += self._size(item)
            depth = self._depth
        if self._depth_gauge is not None:
            self._depth_gauge.set(depth)
        self.wake()

    async def room(self) -> None:
        """Until the depth is under the bound (or the inbox is closed)."""
        if self._depth < self._capacity or self.closed:
            return
        loop = asyncio.get_running_loop()
        counted = False
        while True:
            with self._guard:
                if self._depth < self._capacity or self.closed:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                waiter = (loop, fut)
                self._room.append(waiter)
            if not counted and self._waits is not None:
                self._waits.inc()
            counted = True
            try:
                await fut
            finally:
                with self._guard, contextlib.suppress(ValueError):
                    self._room.remove(waiter)

    # ---- the consumer (its loop) -----------------------------------------------------------

    def bind(self) -> None:
        """Call on the loop that consumes, before anyone puts anything."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def wake(self) -> None:
        loop, event = self._loop, self._event
        assert loop is not None and event is not None, "bind() first"
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # (its loop closed: nobody to wake)
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        """Until woken (something put, or ``wake``)."""
        assert self._event is not None, "bind() first"
        await self._event.wait()
        self._event.clear()

    def head(self) -> T | None:
        with self._guard:
            return self._items[0] if self._items else None

    def pop(self) -> T:
        """Remove the head; producers waiting for room go on if there is room now."""
        with self._guard:
            item = self._items.popleft()
            self._depth -= self._size(item)
            depth = self._depth
            waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
            if depth < self._capacity:
                waiters, self._room = self._room, []
        if self._depth_gauge is not None:
            self._depth_gauge.set(depth)
        for loop, fut in waiters:
            _release(loop, fut)
        return item

    def take(self) -> T | None:
        """The head, popped (``None`` if empty)."""
        with self._guard:
            empty = not self._items
        return None if empty else self.pop()

    def close(self) -> None:
        """Nobody consumes any more: whoever waits for room stops waiting."""
        with self._guard:
            self.closed = True
            waiters, self._room = self._room, []
        for loop, fut in waiters:
            _release(loop, fut)
