"""A plausible past for a city: alerts with their acknowledgements, escalations and
resolutions, outages, and property companies of clearly different quality (``anju demo
--history DAYS``, the supervision tests and ``anju bench supervision``).

Stories are generated deterministically from a seed, then played through the alerting core's
own lifecycle (``AlertBook``): ``write_history`` stores every change with ``AlertStore.save``,
as the backend does (audit hash chain included), in time order; ``write_bulk`` (the benchmark's
year of a city, in a throwaway database) COPYs each alert's final row with its resolution's
audit entry, NOT hash-chained (``anju alerts verify-audit`` would report them).
Every generated alert carries ``evidence.generated: true``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from anju.contract import Audience, Severity
from anju.registry import CityIndex, DeviceInfo
from backend.alerting.lifecycle import Alert, AlertBook, Change, Deadlines
from backend.alerting.model import Raise
from backend.alerting.storm import pseudo_device
from backend.store import AlertStore

CHINA: Final = timezone(timedelta(hours=8))
_PERSON_RESOLVES: Final = frozenset(
    {"fire.alarm", "security.emergency_button", "security.object_thrown", "elevator.fault"}
)
# (type, severity, device kind or "gateway", mean per community-day, resolve minutes lo-hi,
#  how much worse a poor company makes it: rate x (1 + worse * (1 - quality)))
MENU: Final = (
    ("device.offline", "minor", "smoke_detector", 0.8, (10, 240), 1.5),
    ("device.battery_low", "minor", "smoke_detector", 0.3, (600, 2880), 1.0),
    ("access.door_held_open", "minor", "access_controller", 0.7, (4, 30), 1.0),
    ("fire.door_held_open", "minor", "fire_door", 0.4, (6, 60), 1.0),
    ("elevator.door_held_open", "minor", "elevator", 0.3, (3, 15), 0.5),
    ("elevator.trapped", "critical", "elevator", 0.02, (5, 45), 4.0),
    ("elevator.fault", "major", "elevator", 0.03, (30, 300), 4.0),
    ("elevator.stopped_outside_door_zone", "major", "elevator", 0.01, (5, 60), 4.0),
    ("fire.alarm", "critical", "smoke_detector", 0.05, (5, 40), 1.0),
    ("fire.water_pressure_low", "major", "water_pressure", 0.015, (60, 720), 4.0),
    ("fire.electrical", "major", "electrical_fire", 0.01, (20, 240), 4.0),
    ("fire.panel_fault", "major", "fire_panel", 0.04, (30, 600), 2.0),
    ("security.perimeter_intrusion", "major", "perimeter", 0.15, (5, 20), 0.5),
    ("security.emergency_button", "critical", "emergency_button", 0.02, (5, 30), 0.5),
    ("access.door_forced", "major", "access_controller", 0.08, (2, 20), 0.5),
    ("gateway.offline", "major", "gateway", 0.015, (10, 480), 4.0),
)
_TITLES: Final = {
    "elevator.trapped": "电梯困人 Passengers trapped",
    "fire.alarm": "火警 Fire alarm",
    "gateway.offline": "网关离线 Gateway offline",
}


@dataclass(frozen=True, slots=True)
class Story:
    """One alert's life, in ms since the epoch."""

    device: DeviceInfo
    type: str
    severity: Severity
    occurred_ms: int
    raised_ms: int
    acks: tuple[tuple[Audience, int], ...]
    resolve_ms: int
    resolved_by: str
    note: str
    confirmed: bool


def quality_of(city: CityIndex) -> dict[str, float]:
    """Each organisation's quality in [0.2, 1]: the first in id order best, the last worst."""
    out: dict[str, float] = {}
    for kind in ("property", "maintenance"):
        ids = sorted(o.id for o in city.registry.organisations if o.kind == kind)
        for i, oid in enumerate(ids):
            out[oid] = 1.0 - 0.8 * i / max(1, len(ids) - 1)
    return out


def _poisson(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def generate(city: CityIndex, *, start: date, days: int, seed: int = 1) -> Iterator[Story]:
    """Stories of alerts occurring on the local days ``start`` .. ``start + days - 1``."""
    rng = random.Random(f"anju-history:{seed}")
    quality = quality_of(city)
    by_kind: dict[tuple[str, str], list[DeviceInfo]] = {}
    for d in city.devices.values():
        by_kind.setdefault((d.community_id, d.kind), []).append(d)
    for day in range(days):
        day0 = datetime.combine(start + timedelta(days=day), datetime.min.time(), CHINA)
        day_ms = int(day0.timestamp() * 1000)
        for com in city.registry.communities:
            q = quality.get(com.property, 0.7)
            for typ, sev, kind, mean, (lo, hi), worse in MENU:
                if kind == "gateway":
                    devs = [pseudo_device(city, "gateway", g.id) for g in com.gateways]
                else:
                    devs = by_kind.get((com.id, kind), [])
                if not devs:
                    continue
                for _ in range(_poisson(rng, mean * (1 + worse * (1 - q)))):
                    yield _story(rng, rng.choice(devs), typ, Severity(sev), day_ms, lo, hi, q,
                                 quality)  # fmt: skip


def _story(
    rng: random.Random,
    dev: DeviceInfo,
    typ: str,
    sev: Severity,
    day_ms: int,
    lo: float,
    hi: float,
    q: float,
    quality: dict[str, float],
) -> Story:
    occurred = day_ms + rng.randrange(86_400_000)
    late = rng.random() < 0.03  # held in a gateway's outbox, raised hours later
    raised = occurred + (rng.randrange(3_600_000, 6 * 3_600_000) if late else 1_000)
    acks: list[tuple[Audience, int]] = []
    if rng.random() > 0.01 + 0.25 * (1 - q):
        acks.append(
            (Audience.PROPERTY, raised + int(rng.lognormvariate(math.log(40 / q**2), 0.9) * 1000))
        )
    if dev.maintenance_org and typ.startswith("elevator."):
        mq = quality.get(dev.maintenance_org, 0.7)
        if rng.random() > 0.05 + 0.2 * (1 - mq):
            delay = rng.lognormvariate(math.log(60 / mq**2), 0.8)
            acks.append((Audience.MAINTENANCE, raised + int(delay * 1000)))
    resolve = raised + int(rng.uniform(lo, hi) * (1.5 - q / 2) * 60_000)
    first_ack = min((t for _a, t in acks), default=None)
    by, note, confirmed = "rules", "condition cleared", False
    if typ in _PERSON_RESOLVES:
        resolve = max(resolve, (first_ack or raised) + 60_000)
        by = f"值班员 ({dev.property_org})"
        note = "已处置 handled"
        if typ == "fire.alarm":
            confirmed = rng.random() < 0.15
            if not confirmed and rng.random() < 0.7:
                note = "误报 false alarm: cooking smoke"
    # acks after the resolution are not made
    acks = [(a, t) for a, t in acks if t < resolve]
    return Story(dev, typ, sev, occurred, raised, tuple(acks), resolve, by, note, confirmed)


def _evidence(s: Story) -> dict[str, Any]:
    ev: dict[str, Any] = {"generated": True}
    if s.confirmed:
        ev["confirmed"] = True
    return ev


def play(s: Story, book: AlertBook, deadlines: Deadlines) -> Iterator[tuple[int, Change]]:
    """The changes of a story, in time order (a generator: state advances as it is read)."""
    title = _TITLES.get(s.type, s.type)
    ch = book.raise_(
        s.device, Raise(s.type, s.severity, title, s.occurred_ms, _evidence(s)), s.raised_ms
    )
    if ch is None or ch.action != "raised":
        return
    alert = ch.alert
    yield s.raised_ms, ch
    steps: list[tuple[int, str, Audience | None]] = [(t, "ack", a) for a, t in s.acks]
    if s.severity is Severity.CRITICAL:
        steps.append((s.raised_ms + deadlines.of(s.type), "deadline", None))
    steps.append((s.resolve_ms, "resolve", None))
    for t, what, aud in sorted(steps, key=lambda x: (x[0], x[1] != "ack")):
        if what == "ack" and aud is not None:
            who = "值班员" if aud is Audience.PROPERTY else "维保工程师"
            c = book.acknowledge(alert, aud, by=who, note="", now_ms=t)
            if c is not None:
                yield t, c
        elif what == "deadline":
            if t < s.resolve_ms:
                # This alert only: the shared book may hold others, escalated by their own story.
                alone = AlertBook()
                alone.load(alert)
                for c in alone.escalations(t, deadlines):
                    yield t, c
        else:
            yield t, book.resolve(alert, t, by=s.resolved_by, note=s.note)
            return


async def write_history(
    pool: AsyncConnectionPool, city: CityIndex, *, days: int, end: date, seed: int = 1
) -> int:
    """Store ``days`` local days of history ending the day before ``end``, change by change
    through ``AlertStore.save`` in time order, then mark its audit entries published (the past
    was never live: the backend must not deliver it to subscribers at its next start).
    Returns the number of alerts."""
    store = _Saver(AlertStore(pool))
    deadlines = Deadlines()
    start = end - timedelta(days=days)
    stop_ms = int(datetime.combine(end, datetime.min.time(), CHINA).timestamp() * 1000)
    stories = [s for s in generate(city, start=start, days=days, seed=seed)]
    stories.sort(key=lambda s: s.raised_ms)
    book = AlertBook()
    heap: list[tuple[int, int, Iterator[tuple[int, Change]]]] = []
    count = 0
    busy_until: dict[tuple[str, str], int] = {}
    for i, s in enumerate(stories):
        # Changes due before this story is raised go first (time order across alerts).
        while heap and heap[0][0] <= s.raised_ms:
            await _step(heap, store)
        key = (s.device.id, s.type)
        if s.resolve_ms >= stop_ms or s.raised_ms <= busy_until.get(key, -1):
            continue  # history ends resolved; one open alert per (device, type)
        busy_until[key] = s.resolve_ms
        it = play(s, book, deadlines)
        first = next(it, None)
        if first is None:
            continue
        count += 1
        await store.save(first[1], first[0])
        _push(heap, it, i)
    while heap:
        await _step(heap, store)
    await store.done()
    return count


class _Saver:
    """``AlertStore.save``, remembering the audit entries written."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self.ns: list[int] = []

    async def save(self, change: Change, now_ms: int) -> None:
        self.ns.append((await self.store.save(change, now_ms)).n)

    async def done(self) -> None:
        for i in range(0, len(self.ns), 5000):
            await self.store.mark_published(self.ns[i : i + 5000])
        self.ns.clear()


def _push(
    heap: list[tuple[int, int, Iterator[tuple[int, Change]]]],
    it: Iterator[tuple[int, Change]],
    i: int,
) -> None:
    nxt = next(it, None)
    if nxt is not None:
        # Peeked: keep the change with its iterator.
        heapq.heappush(heap, (nxt[0], i, _Peeked(nxt, it)))


class _Peeked:
    """An iterator with its first item taken out already."""

    def __init__(self, first: tuple[int, Change], rest: Iterator[tuple[int, Change]]) -> None:
        self.first: tuple[int, Change] | None = first
        self.rest = rest

    def __iter__(self) -> _Peeked:
        return self

    def __next__(self) -> tuple[int, Change]:
        if self.first is not None:
            f, self.first = self.first, None
            return f
        return next(self.rest)

    def __lt__(self, other: object) -> bool:
        return False


async def _step(heap: list[tuple[int, int, Iterator[tuple[int, Change]]]], store: _Saver) -> None:
    _t, i, it = heapq.heappop(heap)
    t, change = next(it)
    await store.save(change, t)
    _push(heap, it, i)


async def write_bulk(
    conn: AsyncConnection, city: CityIndex, *, days: int, end: date, seed: int = 1
) -> int:
    """The benchmark's path: each alert's final row and its resolution's audit entry,
    COPYed (the chain computed as ``store.entry_hash`` does). Returns the number of alerts."""
    deadlines = Deadlines()
    start = end - timedelta(days=days)
    count = 0
    audit: list[tuple[Any, ...]] = []
    async with conn.cursor() as cur:
        async with cur.copy(
            "COPY alerts (id, type, device_id, community_id, district, severity, state,"
            " occurred_at, raised_at, updated_at, resolved_at, payload) FROM STDIN"
        ) as ca:
            for s in generate(city, start=start, days=days, seed=seed):
                book = AlertBook()
                last: tuple[int, Change] | None = None
                for t, ch in play(s, book, deadlines):
                    last = (t, ch)
                if last is None or last[1].action != "resolved":
                    continue
                t, ch = last
                a: Alert = ch.alert
                await ca.write_row(
                    (a.id, a.type, a.device.id, a.device.community_id, a.device.district,
                     ch.row.severity, ch.row.state, _utc(a.occurred_at), _utc(a.raised_at),
                     _utc(t), _utc(t), Jsonb(ch.payload))
                )  # fmt: skip
                entry = {"alert_id": a.id, "at": _utc(t).isoformat(), "action": ch.action,
                         "actor": ch.actor, "payload": ch.payload}  # fmt: skip
                audit.append((a.id, _utc(t), ch.action, ch.actor, Jsonb(entry)))
                count += 1
        async with cur.copy(
            "COPY alert_audit (alert_id, at, action, actor, entry, prev_hash, hash, published)"
            " FROM STDIN"
        ) as cp:
            for r in audit:
                await cp.write_row((*r, _UNCHAINED, _UNCHAINED, True))
    return count


_UNCHAINED: Final = "unchained: benchmark data"


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def _fill(db_url: str, city: CityIndex, days: int, today: date) -> str:
    from backend.supervision.credit import publish
    from backend.supervision.measures import month_bounds
    from backend.supervision.rollup import refresh, sync_registry
    from backend.supervision.ruleset import load_rules

    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as pool:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM alerts WHERE payload->'evidence' ? 'generated'"
            )
            row = await cur.fetchone()
            if row and row[0]:
                return f"history: kept the {row[0]} generated alerts already there"
        n = await write_history(pool, city, days=days, end=today)
        rules = load_rules()
        async with pool.connection() as conn:
            await sync_registry(conn, city, today=today)
            await refresh(conn)
            month = month_bounds(today - timedelta(days=days))[0]
            published = 0
            while month <= today:
                await publish(conn, month, rules, by="anju demo --history")
                published += 1
                month = month_bounds(month)[1]
    return f"history: {n} alerts over {days} days; credit results of {published} month(s) published"


def fill_for_demo(db_url: str, city: CityIndex, days: int) -> str:
    """``anju demo --history DAYS``: migrate, write ``days`` days of history ending yesterday
    (once: a database that has generated alerts keeps them), and publish the credit results
    of every month it covers with the default rule set. Returns a line to show."""
    import asyncio

    from backend.db.migrate import migrate

    migrate(db_url)
    today = datetime.now(UTC).astimezone(CHINA).date()
    return asyncio.run(_fill(db_url, city, days, today))
