"""Partitions of several active workers (``backend.partitions``) and the hand-over of records
to their owner (``backend.handoff``), on a real PostgreSQL: workers share the partitions and
take a leaver's at once; a handed-over row is deleted only with the rule state of its
evaluation."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.uplink import Record
from backend.db.migrate import migrate
from backend.desk.states import StateWriter
from backend.handoff import forget, from_json, hand_off, take, to_json
from backend.partitions import Partitions, partition_of
from backend.store import AlertStore

pytestmark = pytest.mark.integration

COMMUNITIES = [f"c{i}" for i in range(40)]


def test_partition_of_is_stable_and_spread() -> None:
    parts = [partition_of(c, 8) for c in COMMUNITIES]
    assert parts == [partition_of(c, 8) for c in COMMUNITIES]  # (no per-process salt)
    assert len(set(parts)) == 8
    assert partition_of("jx-nh-0001", 16) == 7  # the same on every worker, every version


async def test_workers_share_the_partitions_and_take_a_leavers(db_url: str) -> None:
    adopted: dict[str, list[int]] = {"a": [], "b": []}

    def worker(name: str) -> Partitions:
        async def adopt(p: int, communities: list[str]) -> None:
            assert all(partition_of(c, 4) == p for c in communities)
            adopted[name].append(p)

        return Partitions(db_url, "g", 4, COMMUNITIES, adopt=adopt)

    a, b = worker("a"), worker("b")
    other_group = Partitions(db_url, "h", 4, COMMUNITIES, adopt=lambda p, c: asyncio.sleep(0))
    try:
        for w in (a, b, other_group):
            await w.connect()
        await a._look()
        await b._look()
        assert len(a.owned) == 2 and len(b.owned) == 2 and not a.owned & b.owned
        assert sorted(adopted["a"]) == sorted(a.owned)  # adopted before owned
        assert a.owns("c0") != b.owns("c0")
        await other_group._look()  # another group's locks are its own
        assert len(other_group.owned) == 4
        await b.close()  # b leaves: its locks are freed with its connection
        for _ in range(50):  # (the server lists a closed session for a moment)
            await a._look()
            if len(a.owned) == 4:
                break
            await asyncio.sleep(0.1)
        assert a.owned == {0, 1, 2, 3}
        assert sorted(adopted["a"]) == [0, 1, 2, 3]
    finally:
        for w in (a, b, other_group):
            await w.close()


def _rec(seq: int) -> Record:
    return Record("gw-1", "boot", seq, "dev-1", "t", 1_000 + seq, 1_005 + seq, metrics={"x": seq})


async def test_a_handed_over_row_is_deleted_with_the_state_of_its_evaluation(
    db_url: str,
) -> None:
    await asyncio.to_thread(migrate, db_url)
    pool: AsyncConnectionPool = AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False)
    await pool.open()
    try:
        records = [_rec(1), _rec(2), _rec(3)]
        assert [from_json(to_json(r)) for r in records] == records
        await hand_off(pool, "g", {3: records[:2], 5: records[2:]})
        async with pool.connection() as conn:
            rows = await take(conn, [3, 5])
            assert [recs for _, recs in rows] == [records[:2], records[2:]]
            assert await take(conn, [4]) == []
        writer = StateWriter(AlertStore(pool))
        # The rule state of the first row's evaluation stored: the row goes with it.
        await writer.write({"dev-1": '{"values": {}}'}, [("gw-1", "boot", 1)], [rows[0][0]])
        async with pool.connection() as conn:
            left = await take(conn, [3, 5])
        assert [i for i, _ in left] == [rows[1][0]]
        # A state write that fails after the delete: the row stays (one transaction).

        async def fails(conn: psycopg.AsyncConnection) -> None:  # type: ignore[type-arg]
            await forget(conn.cursor(), [left[0][0]])
            raise RuntimeError("the state write fails after the delete")

        with pytest.raises(RuntimeError):
            await AlertStore(pool).save_states({"dev-1": "{}"}, fails)
        async with pool.connection() as conn:
            assert [i for i, _ in await take(conn, [3, 5])] == [left[0][0]]
    finally:
        await pool.close()
