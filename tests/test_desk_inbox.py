"""The desk's typed, bounded hand-over between threads (``backend.desk.inbox.Inbox``)."""

from __future__ import annotations

import asyncio
import threading

from backend.desk.inbox import Inbox
from backend.metrics import BackendMetrics


def value(m: BackendMetrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_depth_and_capacity_are_reported_by_size() -> None:
    async def main() -> None:
        m = BackendMetrics()
        box: Inbox[list[int]] = Inbox("keeper", 5, m, size=len)
        box.bind()
        box.put([1, 2])
        box.put([3, 4, 5])
        assert box.depth == 5 and box.full() and len(box) == 2
        assert value(m, "anju_backend_queue_depth", queue="keeper") == 5
        assert value(m, "anju_backend_queue_capacity", queue="keeper") == 5
        assert box.head() == [1, 2]
        assert box.pop() == [1, 2]
        assert box.depth == 3 and not box.full()
        assert box.take() == [3, 4, 5] and box.take() is None
        assert value(m, "anju_backend_queue_depth", queue="keeper") == 0

    asyncio.run(main())


def test_a_producer_on_another_thread_waits_for_room_and_nothing_is_dropped() -> None:
    """The keeper's policy: ``put`` never drops; a producer waits in ``room`` (counted once
    per wait) until the consumer, on another loop, pops."""
    m = BackendMetrics()
    box: Inbox[int] = Inbox("keeper", 2, m)
    bound = threading.Event()
    produced = threading.Event()
    consumer_loop: list[asyncio.AbstractEventLoop] = []

    def producer() -> None:
        async def main() -> None:
            bound.wait()
            for i in range(10):
                await box.room()
                box.put(i)
            produced.set()

        asyncio.run(main())

    async def consumer() -> list[int]:
        consumer_loop.append(asyncio.get_running_loop())
        box.bind()
        bound.set()
        got: list[int] = []
        while len(got) < 10:
            await box.wait()
            while (item := box.head()) is not None:
                got.append(item)
                box.pop()
        return got

    t = threading.Thread(target=producer)
    t.start()
    got = asyncio.run(consumer())
    t.join()
    assert produced.is_set()
    assert got == list(range(10))
    assert box.depth == 0


def test_room_waits_then_goes_on_when_popped_or_closed() -> None:
    async def main() -> None:
        m = BackendMetrics()
        box: Inbox[int] = Inbox("delivery", 1, m)
        box.bind()
        box.put(1)
        waiting = asyncio.ensure_future(box.room())
        await asyncio.sleep(0)
        assert not waiting.done()
        assert value(m, "anju_backend_queue_overflow_total", queue="delivery", policy="wait") == 1
        box.pop()
        await waiting
        box.put(2)
        again = asyncio.ensure_future(box.room())
        await asyncio.sleep(0)
        assert not again.done()
        box.close()
        await again
        await box.room()  # closed: never waits
        assert value(m, "anju_backend_queue_overflow_total", queue="delivery", policy="wait") == 2

    asyncio.run(main())


def test_merged_items_are_bounded_by_their_keys() -> None:
    """The states' policy: snapshots merged by key while they wait."""

    def merge(old: dict[str, int], new: dict[str, int]) -> dict[str, int]:
        old.update(new)
        return old

    async def main() -> None:
        box: Inbox[dict[str, int]] = Inbox("states", 3, BackendMetrics(), size=len, merge=merge)
        box.bind()
        for i in range(100):
            box.put({f"d{i % 3}": i})
        assert len(box) == 1 and box.depth == 3
        assert box.take() == {"d0": 99, "d1": 97, "d2": 98}
        box.put({"d0": 1})
        assert box.take() == {"d0": 1}

    asyncio.run(main())
