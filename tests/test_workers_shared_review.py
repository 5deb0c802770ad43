"""Review of 807a27e (several active workers, issue 11, Deliver 2): the defects found, each
a test that failed then and passes since the fixes (with the control cases).

- A gateway's retained state is dropped by every shared worker while it owns no partition:
  at start the retained states arrive before the first partitions are taken (``SETTLE_S``),
  so a gateway already offline (its retained Last Will) is never seen by the owner of its
  partition and ``gateway.offline`` is never raised (one worker raises it at start). The
  same holds for a state that arrives while its partition is being taken over.
- Workers alive are counted in ``pg_stat_activity`` by application name over the whole
  PostgreSQL cluster, while the partition locks are per database: a deployment whose group
  has the same name on another database of the same server (staging beside production, the
  default group name) counts the other's workers, takes too small a share, and leaves
  partitions without an owner for ever (their records handed over and never evaluated).
- A worker whose lock connection the server ended (its locks freed at once: an
  administrator's pg_terminate_backend, a pooler, idle_session_timeout) keeps evaluating its
  partitions until its next look (``POLL_S``) while another worker takes and evaluates them:
  two evaluators, and nothing fences the old one's writes.
- A partition's alert changes left unpublished by the worker that had it are read back by
  ``Delivery.adopt`` into the backlog, but the delivery is waiting on its queue
  (``_next``: the backlog is looked at only when something is queued): they are published
  only when this worker's own next change comes, which in a quiet city may be never.
- An acknowledgement forwarded to the owner of the alert's partition and not answered in
  ``ANSWER_WAIT_S`` is withdrawn (503, Retry-After) although the owner has taken it and
  applies it (it applies every request it selected, and its answers commit together at the
  end of its batch): the person is told to try again for what was done.
- A partition's entries read back by ``Delivery.adopt`` are read back again by the
  overflow's read-back (``_read_back`` reads the unpublished entries above ``_seen``, the
  highest number that came into memory, which adopted entries do not raise): published
  twice when the delivery queue had overflowed around the takeover and the published marks
  are behind (a race with ``Delivery.marks``; with one worker nothing depends on it).
- A handed-over row is deleted with the rule state of its evaluation, but the alert that
  evaluation raised is stored by the keeper in a transaction of its own, in no order with
  it: the row can be gone, the state stored (the event's mark with it) and the alarm not
  stored; an owner killed then loses the alarm (the next owner has nothing to evaluate).
  (The same order exists for one worker's telemetry marks; with several workers every
  other worker's records depend on it.)
- A group name the database cannot use as a notification channel (``anju_handoff_`` + the
  group, 64 bytes or more) makes every hand-over fail: ``pg_notify`` refuses the channel
  and the insert rolls back with it (not an "unavailable" error: not retried, the ingest
  task fails).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.contract import Audience
from anju.now import now_ms
from anju.registry import CityIndex
from anju.servers import PrivateMosquitto, PrivatePostgres, free_port
from anju.uplink import Record, state_topic
from backend.alerting.engine import Engine
from backend.alerting.lifecycle import Change
from backend.alerting.testing import sample_city
from backend.db.migrate import migrate
from backend.delivery import Delivery
from backend.desk import AlertDesk, Keeper, StateWriter
from backend.handoff import hand_off, take
from backend.metrics import BackendMetrics
from backend.partitions import Partitions
from backend.requests import ANSWER_WAIT_S, AlertActions, NotAnswered
from backend.store import AlertStore, Pending
from tests.support import eventually
from tests.test_delivery_bounded import changes
from tests.test_workers import GW, count

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[1]


def _start(
    db_url: str, broker: PrivateMosquitto, city: Path, log: Path, shared: bool
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "anju", "backend", "run", "--db", db_url, "--mqtt", broker.url,
        "--registry", str(city), "--api-port", str(free_port()),
    ]  # fmt: skip
    if shared:
        args += ["--group", "anju-review", "--shared", "--client-id", "anju-backend-1"]
    with log.open("ab") as err:
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.parametrize(
    "shared",
    [False, True],
    ids=["one-worker", "shared"],
)
async def test_gateway_offline_at_start_is_raised(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path, shared: bool
) -> None:
    # The gateway went away while no backend ran: its Last Will is the retained state.
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sim-lwt") as client:
        await client.publish(
            state_topic(GW), json.dumps({"online": False, "boot": "b1"}), qos=1, retain=True
        )
    log = tmp_path / "worker.log"
    proc = _start(db_url, broker, city_file, log, shared)
    try:

        def raised() -> bool:
            try:
                return (
                    count(
                        db_url,
                        "SELECT count(*) FROM alerts WHERE type = 'gateway.offline'"
                        " AND device_id = %s",
                        GW,
                    )
                    > 0
                )
            except psycopg.Error:
                return False

        # Every partition is taken 1.5 s after the start (one worker alive); the retained
        # state came before that and is not sent again.
        await eventually(raised, 40, "gateway.offline for the gateway offline at start")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_long_group_name_hands_over(db_url: str) -> None:
    migrate(db_url)
    group = "anju-backend-" + "x" * 40  # 53 characters: a valid --group today
    rec = Record(gateway_id=GW, boot_id="b1", seq=1, device_id="d", kind="t", ts=1, rx=1)
    async with AsyncConnectionPool(db_url, min_size=1, max_size=1, open=False) as pool:
        await hand_off(pool, group, {3: [rec]})
    assert count(db_url, "SELECT count(*) FROM rules_handoff") == 1


COMMUNITIES = [f"c{i}" for i in range(40)]


async def _noop(p: int, communities: list[str]) -> None:
    return None


async def test_a_same_named_group_on_another_database_leaves_no_partition_unowned(
    postgres: PrivatePostgres, db_url: str
) -> None:
    other_db = postgres.create_database(f"t_other_{abs(hash(db_url)) % 10**8}")
    prod = Partitions(db_url, "anju-backend", 4, COMMUNITIES, adopt=_noop)
    staging = Partitions(other_db, "anju-backend", 4, COMMUNITIES, adopt=_noop)
    try:
        await prod.connect()
        await staging.connect()
        for _ in range(3):  # (looks every POLL_S: it never takes more)
            await prod._look()
            await staging._look()
        # The only worker of its database: every partition is its own.
        assert prod.owned == {0, 1, 2, 3}, sorted(prod.owned)
    finally:
        await prod.close()
        await staging.close()


async def test_a_partition_has_one_owner_after_its_lock_connection_ends(db_url: str) -> None:
    """Fencing by leaving: the worker whose lock connection the server ended stops counting
    its partitions and leaves (``on_lost``: ``os._exit`` in a worker) within about a second,
    by its own check, also while it is not looking for partitions."""
    lost = asyncio.Event()
    a = Partitions(db_url, "g", 4, COMMUNITIES, adopt=_noop, on_lost=lost.set)
    b = Partitions(db_url, "g", 4, COMMUNITIES, adopt=_noop)
    running = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(a.taking.wait(), 10)
        assert a.owned == {0, 1, 2, 3}
        assert a.conn is not None
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (a.conn.info.backend_pid,))
        await asyncio.wait_for(lost.wait(), 3)  # (checked every second)
        assert a.owned == frozenset()
        await b.connect()
        for _ in range(50):  # (the server lists the ended session for a moment)
            await b._look()
            if b.owned == {0, 1, 2, 3}:
                break
            await asyncio.sleep(0.1)
        assert b.owned == {0, 1, 2, 3}
        assert not (a.owned & b.owned)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await a.close()
        await b.close()


async def test_a_partitions_unpublished_changes_are_published_when_it_is_taken(
    db_url: str, broker: PrivateMosquitto
) -> None:
    await asyncio.to_thread(migrate, db_url)
    community = next(iter(sample_city().communities))
    left = [c for c in changes() if c.payload["community_id"] == community][:2]
    assert left
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4) as pool:
        store = AlertStore(pool)
        for c in left:  # raised by the worker that had the partition; it died unpublished
            await store.save(c, 0)
        delivery = Delivery(store, BackendMetrics())
        delivery.communities = lambda: []  # this worker's partitions: none yet
        published: list[Pending] = []
        delivery.listeners.append(published.append)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            run = asyncio.create_task(delivery.run(client))
            try:
                await asyncio.sleep(0.5)  # running, nothing to send
                assert await delivery.adopt([community]) == len(left)
                await eventually(
                    lambda: len(published) == len(left), 10, "the taken partition's changes"
                )
            finally:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)


def an_owners_desk(
    pool: AsyncConnectionPool, city: CityIndex
) -> tuple[Keeper, StateWriter, AlertDesk]:
    """A worker's desk on ``pool``: its keeper and state writer bound, not running."""
    store, m = AlertStore(pool), BackendMetrics()
    keeper = Keeper(store, Delivery(store, m), m)
    states = StateWriter(store, m)
    keeper.inbox.bind()
    states.inbox.bind()
    return keeper, states, AlertDesk(Engine(city, now_ms=now_ms()), keeper, states)


async def test_a_forwarded_ack_answered_503_is_not_applied(db_url: str) -> None:
    await asyncio.to_thread(migrate, db_url)
    city = sample_city()
    dev = city.devices["c0-manual_call_point-0"]
    async with AsyncConnectionPool(db_url, min_size=1, max_size=6) as pool:
        keeper, _states, desk = an_owners_desk(pool, city)
        t = now_ms()
        rec = Record(dev.gateway_id, "b", 1, dev.id, "e", t, t, event_type="alarm", data={})
        desk.evaluate([rec])
        await keeper.drain()  # the fire alarm stored (the owner's keeper)
        [alarm] = [a for a in desk.engine.book.open.values() if a.type == "fire.alarm"]
        # The owner of the community's partition (1 partition: every community), and a
        # worker that owns none.
        owner = Partitions(db_url, "g", 1, city.communities, adopt=_noop)
        owner.owned = frozenset({0})
        asker = Partitions(db_url, "g", 1, city.communities, adopt=_noop)
        serving = asyncio.create_task(
            AlertActions(desk, pool=pool, group="g", partitions=owner).serve()
        )
        try:
            forward = AlertActions(desk, pool=pool, group="g", partitions=asker)

            # The owner's keeper is busy (not storing) for longer than the asker waits: its
            # desk waits to store the ack; then it catches up.
            async def slow_keeper() -> None:
                await asyncio.sleep(ANSWER_WAIT_S + 1)
                await keeper.drain()

            catching_up = asyncio.create_task(slow_keeper())
            answered_503 = False
            try:
                await forward.acknowledge(
                    alarm.id,
                    Audience("fire"),
                    by="duty officer",
                    note="",
                    community=dev.community_id,
                )
            except NotAnswered:
                answered_503 = True
            await catching_up
            await asyncio.sleep(0.5)
            applied = any(a["audience"] == "fire" for a in desk.engine.book.get(alarm.id).acks)
            assert not (answered_503 and applied), "answered 503, and acknowledged"
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def test_an_adopted_change_is_published_once_after_an_overflow(
    db_url: str, broker: PrivateMosquitto
) -> None:
    await asyncio.to_thread(migrate, db_url)
    mine: list[Change] = []
    theirs: list[Change] = []
    for i, c in enumerate(changes()[:4]):
        c.payload["community_id"] = "c-taken" if i == 2 else "c-mine"
        (theirs if i == 2 else mine).append(c)
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4) as pool:
        store = AlertStore(pool)
        scope = ["c-mine"]
        delivery = Delivery(store, BackendMetrics(), maxsize=1)
        delivery.communities = lambda: list(scope)
        published: list[Pending] = []
        delivery.listeners.append(published.append)
        # This worker's changes, faster than it sends (over the bound: left in the database),
        # and, between them, one of the worker that had the other partition (unpublished).
        await delivery.enqueue(await store.save(mine[0], 0), None)
        await delivery.enqueue(await store.save(mine[1], 0), None)  # shed
        await store.save(theirs[0], 0)
        await delivery.enqueue(await store.save(mine[2], 0), None)  # shed
        assert await delivery.adopt(["c-taken"]) == 1
        scope.append("c-taken")
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            # (The published marks are behind, as under load: ``marks`` not running. With one
            # worker nothing depends on them: every entry above ``_seen`` is out of memory.)
            run = asyncio.create_task(delivery.run(client))
            try:
                await eventually(lambda: len(published) >= 4, 10, "every change")
                await asyncio.sleep(0.5)
            finally:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        ns = [p.n for p in published]
        assert len(ns) == len(set(ns)) == 4, ns


async def test_a_handed_row_is_not_deleted_before_its_alarm_is_stored(db_url: str) -> None:
    await asyncio.to_thread(migrate, db_url)
    city = sample_city()
    dev = city.devices["c0-manual_call_point-0"]
    async with AsyncConnectionPool(db_url, min_size=1, max_size=6) as pool:
        keeper, states, desk = an_owners_desk(pool, city)
        t = now_ms()
        rec = Record(dev.gateway_id, "b", 1, dev.id, "e", t, t, event_type="alarm", data={})
        await hand_off(pool, "g", {0: [rec]})
        async with pool.connection() as conn:
            [(row, recs)] = await take(conn, [0])
        # The owner evaluates the row; its keeper is a moment behind its state writer (two
        # writers, two transactions: here the keeper has not stored yet).
        desk.evaluate(recs, [row])
        writer = asyncio.create_task(states.run())
        keeping: asyncio.Task[None] | None = None
        try:
            await asyncio.sleep(1.0)
            # The state writer waits for the keeper: the row is still there to evaluate.
            assert count(db_url, "SELECT count(*) FROM rules_handoff") == 1
            keeping = asyncio.create_task(keeper.run())
            await eventually(
                lambda: count(db_url, "SELECT count(*) FROM rules_handoff") == 0,
                10,
                "the row deleted",
            )
            # Killed now: the alarm is stored.
            stored = count(db_url, "SELECT count(*) FROM alerts WHERE type = 'fire.alarm'")
            assert stored == 1, "the row is gone and its fire alarm was never stored"
        finally:
            if keeping is not None:
                keeper.close()
                keeping.cancel()
                await asyncio.gather(keeping, return_exceptions=True)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
