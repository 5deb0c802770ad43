"""Between the telemetry lane's commits and the rules.

``RuleFeed.committed`` is the telemetry lane's ``on_committed`` (on the main loop): it only
queues the committed records (so that the ingest's writer never waits for the rules) and
returns. Its task evaluates them in chunks, yielding between chunks (the desk's lock is taken
per chunk, so the alarm lane never waits for more than one). For each flush, once its alert
changes and rule state are stored (``desk.Saved``), the gateways are acknowledged, in commit
order, by a second task. Events and statuses do not come here: the alarm lane evaluates them
on its own thread (``backend.alarm``).

Overflow policy: at most ``max_waiting`` committed flushes wait for the rules; beyond that
``committed`` waits for room, which holds the ingest's writer (its lane's queue then fills and
the ingest applies its own policy). Nothing committed is ever dropped: at shutdown ``drain``
evaluates what is queued (a committed record that the rules never saw would be acknowledged
as a duplicate later and never evaluated).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from anju.uplink import Record
from backend.desk.desk import AlertDesk, Saved

AckFn = Callable[[dict[str, list[int]]], Awaitable[None]]


@dataclass(slots=True)
class _Flush:
    records: list[Record]
    acks: dict[str, list[int]]
    bounded: bool = True  # holds a place in ``room`` until acknowledged


class RuleFeed:
    def __init__(
        self, desk: AlertDesk, ack: AckFn, *, max_waiting: int = 64, chunk: int = 128
    ) -> None:
        self.desk = desk
        self.ack = ack
        self.chunk = chunk
        self.bulk: deque[_Flush] = deque()
        self.room = asyncio.Semaphore(max_waiting)
        self.ready = asyncio.Event()
        self.closing = False
        # Flushes evaluated, with what they saved, waiting to be acknowledged (bounded by
        # ``max_waiting``: a flush keeps its place in ``room`` until acknowledged).
        self.to_ack: asyncio.Queue[tuple[list[Saved], _Flush]] = asyncio.Queue()

    async def committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        try:
            await self.room.acquire()
        except asyncio.CancelledError:
            # Stopping: over the bound, ``drain`` evaluates it.
            self.bulk.append(_Flush(new, acks, bounded=False))
            self.ready.set()
            raise
        self.bulk.append(_Flush(new, acks))
        self.ready.set()

    async def run(self) -> None:
        """Evaluate what is committed, until ``close``d (not cancelled: a flush taken from
        the queue is always evaluated to the end)."""
        while True:
            await self.ready.wait()
            self.ready.clear()
            await self._evaluate_queued()
            if self.closing:
                return

    def close(self) -> None:
        self.closing = True
        self.ready.set()

    async def _evaluate_queued(self) -> None:
        while self.bulk:
            f = self.bulk.popleft()
            saved = []
            for i in range(0, max(len(f.records), 1), self.chunk):
                saved.append(await self.desk.evaluate_when_room(f.records[i : i + self.chunk]))
                await asyncio.sleep(0)  # let the MQTT reader and the ingest run
            self.to_ack.put_nowait((saved, f))

    async def acknowledge(self) -> None:
        """Acknowledge each flush once its changes and rule state are stored, in order."""
        while True:
            saved, f = await self.to_ack.get()
            try:
                for s in saved:
                    await s.wait()
                await self.ack(f.acks)
            finally:
                if f.bounded:
                    self.room.release()

    async def drain(self) -> None:
        """At shutdown: evaluate what was committed and is still queued (not acknowledged:
        the gateways send it again and it is dropped as a duplicate then)."""
        await self._evaluate_queued()
