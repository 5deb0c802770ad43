"""The alert audit log's hash chain: the rules an entry's hash follows, and its verification.

Each ``alert_audit`` row carries ``prev_hash`` (the hash of the row before it, ``GENESIS`` for
the first) and ``hash = sha256(prev_hash + text)``, hex. ``hash_v`` says which text:

- **v1** (entries written before migration 0006): ``text`` is Python's JSON of the entry
  (``json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``). Only the
  ``entry`` column is covered, and the text is Python's, not the database's: ``jsonb`` does not
  keep ``-0.0`` or ``1e16`` as Python wrote them. The verifier rebuilds the text from the stored
  ``jsonb`` and, where a number can have been written two ways (``0.0`` / ``-0.0``, an integer
  of 17 or more digits / a float in exponent form), tries the readings (at most
  ``V1_MAX_AMBIGUOUS`` such numbers per entry).
- **v2** (from migration 0006 on): ``text`` is PostgreSQL's own text of the JSON array
  ``[n, alert_id, at, action, actor, entry]`` (``V2_TEXT``; ``at`` as UTC to the microsecond),
  built by the database from the values it stores, when it writes the row and again when it is
  verified: the hash covers every column a person relies on, and does not depend on how Python
  prints numbers.

Verification reports every entry that does not hold (not only the first); the stored ``hash`` of
each entry is the link the next one is checked against, so one altered entry is reported once.
It also checks the ``alerts`` rows against the audit (an alert's ``payload`` and its columns are
those of its last audit entry), and the chain against anchors (``backend.audit_anchor``): heads
(``n``, ``hash``) written outside the database, so that a cut tail or history rewritten before an
anchor is found.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import product
from typing import Any, Final

import psycopg

GENESIS: Final = "0" * 64
V1: Final = 1
V2: Final = 2
V1_MAX_AMBIGUOUS: Final = 12

_AT_UTC: Final = """to_char({at} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def v2_text(n: str, alert_id: str, at: str, action: str, actor: str, entry: str) -> str:
    """The SQL expression of the text a v2 hash covers, over the given SQL expressions."""
    ts = _AT_UTC.format(at=at)
    return f"jsonb_build_array({n}, {alert_id}::text, {ts}, {action}, {actor}, {entry})::text"


V2_TEXT: Final = v2_text("n", "alert_id", "at", "action", "actor", "entry")

# One row per entry: (n, hash_v, prev_hash, hash, text). The text is the v2 text for v2 rows
# and the entry's jsonb text (from which the v1 text is rebuilt) for the others.
CHAIN_QUERY: Final = (
    f"SELECT n, hash_v, prev_hash, hash, CASE WHEN hash_v = {V2} THEN {V2_TEXT}"
    " ELSE entry::text END FROM alert_audit ORDER BY n"
)
RULES_QUERY: Final = "SELECT hash_v, from_n FROM alert_audit_hash_rules ORDER BY from_n"

# Alerts whose row is not what their last audit entry says, and audited alerts with no row.
_COLUMNS: Final = ("type", "device_id", "community_id", "district", "severity", "state")
_ROW: Final = ", ".join(f"a.{c}" for c in _COLUMNS)
_FROM_PAYLOAD: Final = ", ".join(f"a.payload ->> '{c}'" for c in _COLUMNS)
ALERTS_QUERY: Final = (
    "SELECT id, n, why FROM (SELECT a.id::text AS id, e.n, CASE"
    " WHEN e.n IS NULL THEN 'has no audit entry'"
    " WHEN a.payload IS DISTINCT FROM e.entry -> 'payload'"
    " THEN 'has another payload than its last audit entry'"
    f" WHEN ({_ROW}) IS DISTINCT FROM ({_FROM_PAYLOAD})"
    " THEN 'has columns that do not match its payload' END AS why"
    " FROM alerts a LEFT JOIN LATERAL (SELECT n, entry FROM alert_audit x"
    " WHERE x.alert_id = a.id ORDER BY n DESC LIMIT 1) e ON true) AS checked"
    " WHERE why IS NOT NULL"
    " UNION ALL SELECT x.alert_id::text, max(x.n), 'has audit entries but no alert row'"
    " FROM alert_audit x WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.id = x.alert_id)"
    " GROUP BY x.alert_id ORDER BY 2 NULLS FIRST, 1"
)


@dataclass(frozen=True, slots=True)
class Anchor:
    """The chain's head at a time: entry ``n`` had hash ``hash`` (``at``: RFC 3339, UTC)."""

    n: int
    hash: str
    at: str


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that does not hold: an entry ``n``, or an alert (``alert_id``), and why."""

    n: int | None
    reason: str
    alert_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "alert_id": self.alert_id, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The audit log checked: ``entries`` read, ``anchors`` compared, and every problem."""

    entries: int
    anchors: int = 0
    head: int = 0  # the last entry's n (0: none)
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> int | None:
        """The first entry (by ``n``) that does not hold, if any."""
        ns = [p.n for p in self.problems if p.n is not None]
        return min(ns) if ns else None

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        shown = self.problems if limit is None else self.problems[:limit]
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": self.head,
            "anchors": self.anchors,
            "first_bad": self.first_bad,
            "broken_count": len(self.problems),
            "broken": [p.to_json() for p in shown],
        }


# ---- the rules ----------------------------------------------------------------------------


def sha(prev_hash: str, text: str) -> str:
    return hashlib.sha256((prev_hash + text).encode()).hexdigest()


def v1_text(entry: Any) -> str:
    """The text a v1 hash covers: Python's JSON of the entry."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Either:
    """A number of the stored entry that Python may have written one of two ways."""

    i: int


def _v1_readings(jsonb_text: str) -> Iterable[str]:
    """The v1 texts Python may have hashed for an entry stored as ``jsonb_text``: the plain
    reading first, then (if few enough numbers are ambiguous) every other one."""
    alts: list[tuple[float | int, float | int]] = []

    def either(a: float | int, b: float | int) -> _Either:
        alts.append((a, b))
        return _Either(len(alts) - 1)

    def parse_float(t: str) -> float | _Either:
        v = float(t)
        return either(0.0, -0.0) if v == 0.0 else v

    def parse_int(t: str) -> int | _Either:
        v = int(t)
        if abs(v) >= 10**16:  # Python writes such floats as 1e+16: jsonb as digits
            f = float(t)
            if math.isfinite(f) and Decimal(repr(f)) == Decimal(t):
                return either(v, f)
        return v

    try:
        doc = json.loads(jsonb_text, parse_float=parse_float, parse_int=parse_int)
    except (ValueError, RecursionError):  # an entry Python cannot have written: none holds
        return
    k = len(alts)
    choices = product((0, 1), repeat=k) if k <= V1_MAX_AMBIGUOUS else iter([(0,) * k])
    for choice in choices:

        def pick(o: object, choice: tuple[int, ...] = choice) -> float | int:
            if isinstance(o, _Either):
                return alts[o.i][choice[o.i]]
            raise TypeError(type(o).__name__)

        yield json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=pick
        )


def holds(hash_v: int, prev_hash: str, hash_: str, text: str) -> bool:
    """Whether an entry's hash is the one its rule gives (``text``: see ``CHAIN_QUERY``)."""
    if hash_v == V2:
        return sha(prev_hash, text) == hash_
    if hash_v == V1:
        return any(sha(prev_hash, t) == hash_ for t in _v1_readings(text))
    return False


# ---- verification ---------------------------------------------------------------------------


class ChainCheck:
    """Checks (n, hash_v, prev_hash, hash, text) rows fed in order of ``n`` (``CHAIN_QUERY``),
    each against the rule in force for its ``n`` (``rules``: (hash_v, from_n)), and the chain
    against ``anchors``. Every problem is reported:

    - an edited entry (any covered column) no longer matches its hash;
    - a removed or inserted entry breaks the link of the next one (its ``prev_hash`` is not
      the hash of the entry before it), and a removed one leaves a gap in ``n``;
    - an edited hash breaks its own entry and the link of the next;
    - an entry whose ``hash_v`` is not the rule in force for its ``n`` (a downgrade);
    - an anchor whose entry has another hash (history rewritten) or is missing, or that lies
      beyond the chain's last entry (its tail was cut).
    """

    def __init__(
        self, *, rules: Sequence[tuple[int, int]] = ((V1, 0),), anchors: Sequence[Anchor] = ()
    ) -> None:
        self.rules = sorted(rules, key=lambda r: r[1], reverse=True)
        self.anchors = list(anchors)
        self.by_n: dict[int, list[Anchor]] = {}
        for a in anchors:
            self.by_n.setdefault(a.n, []).append(a)
        self.seen: set[int] = set()
        self.problems: list[Problem] = []
        self.prev, self.prev_n, self.count = GENESIS, 0, 0

    def feed(self, row: Sequence[Any]) -> None:
        n_, hash_v_, prev_hash, hash_, text = row
        n, hash_v = int(n_), int(hash_v_)
        self.count += 1
        if prev_hash != self.prev:
            gap = (
                f" (entries {self.prev_n + 1}..{n - 1} are missing)" if n > self.prev_n + 1 else ""
            )
            self.problems.append(
                Problem(
                    n,
                    f"its prev_hash is not the hash of the entry before it{gap}:"
                    " one removed, added or altered",
                )
            )
        rule = next((v for v, start in self.rules if start <= n), V1)
        if hash_v != rule:
            self.problems.append(Problem(n, f"written by rule v{hash_v} where v{rule} applies"))
        elif not holds(hash_v, prev_hash, hash_, text):
            self.problems.append(Problem(n, "its content does not match its hash (altered)"))
        for a in self.by_n.get(n, ()):
            self.seen.add(a.n)
            if a.hash != hash_:
                self.problems.append(
                    Problem(
                        n,
                        f"the anchor of {a.at} recorded another hash for it:"
                        " history before that anchor was rewritten",
                    )
                )
        self.prev, self.prev_n = hash_, n

    def report(self, more: Iterable[Problem] = ()) -> ChainReport:
        """The report, with ``more`` problems (``alert_problems``)."""
        problems = [*self.problems, *more]
        for a in sorted(self.anchors, key=lambda a: a.n):
            if a.n in self.seen or a.n == 0:
                continue
            if a.n > self.prev_n:
                why = (
                    f"the anchor of {a.at} records entry {a.n}, but the chain ends at entry"
                    f" {self.prev_n}: its tail was cut"
                )
            else:
                why = f"the anchor of {a.at} records entry {a.n}, which is missing"
            problems.append(Problem(a.n, why))
        problems.sort(key=lambda p: -1 if p.n is None else p.n)
        return ChainReport(self.count, len(self.anchors), self.prev_n, tuple(problems))


def check_chain(
    rows: Iterable[Sequence[Any]],
    *,
    rules: Sequence[tuple[int, int]] = ((V1, 0),),
    anchors: Sequence[Anchor] = (),
) -> ChainReport:
    """``ChainCheck`` over every row."""
    check = ChainCheck(rules=rules, anchors=anchors)
    for row in rows:
        check.feed(row)
    return check.report()


def alert_problems(rows: Iterable[Sequence[Any]]) -> list[Problem]:
    """Problems of ``ALERTS_QUERY`` rows: (alert id, its last entry's n, why)."""
    return [
        Problem(None if n is None else int(n), f"alert {a} {why}", str(a)) for a, n, why in rows
    ]


# ---- on a database ----------------------------------------------------------------------------

# One snapshot for the rules, the chain and the alerts (a connection not in autocommit mode:
# this is the first statement of its transaction).
_SNAPSHOT: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def verify(conn: psycopg.Connection[Any], anchors: Sequence[Anchor] = ()) -> ChainReport:
    """Verify the audit log on ``conn`` (read ``anchors`` before: an anchor written after the
    snapshot would look like a cut tail)."""
    conn.execute(_SNAPSHOT)
    rules = [(int(v), int(n)) for v, n in conn.execute(RULES_QUERY)]
    check = ChainCheck(rules=rules, anchors=anchors)
    with conn.cursor(name="audit_chain") as cur:
        cur.itersize = 2_000
        cur.execute(CHAIN_QUERY)
        for row in cur:
            check.feed(row)
    return check.report(alert_problems(conn.execute(ALERTS_QUERY)))


async def verify_async(
    conn: psycopg.AsyncConnection[Any], anchors: Sequence[Anchor] = ()
) -> ChainReport:
    """``verify`` on an asyncio connection; it lets the loop run every few hundred entries."""
    await conn.execute(_SNAPSHOT)
    rules = [(int(v), int(n)) for v, n in await (await conn.execute(RULES_QUERY)).fetchall()]
    check = ChainCheck(rules=rules, anchors=anchors)
    async with conn.cursor(name="audit_chain") as cur:
        cur.itersize = 2_000
        await cur.execute(CHAIN_QUERY)
        i = 0
        async for row in cur:
            check.feed(row)
            i += 1
            if i % 500 == 0:
                await asyncio.sleep(0)
    alerts = await (await conn.execute(ALERTS_QUERY)).fetchall()
    return check.report(alert_problems(alerts))


# For bulk loaders (COPY) only, on the entries they have just written in their transaction:
# every entry after ``after`` gets rule v2's prev_hash and hash, computed in order by the
# database (one statement; each step finds the next entry by its primary key).
_SEAL_V2: Final = (
    "WITH RECURSIVE chain (n, prev_hash, hash) AS ("
    " SELECT x.n, x.prev, encode(sha256(convert_to(x.prev || x.text, 'UTF8')), 'hex')"
    f" FROM (SELECT n, {V2_TEXT} AS text, coalesce((SELECT hash FROM alert_audit"
    " WHERE n <= %(after)s ORDER BY n DESC LIMIT 1), %(genesis)s) AS prev FROM alert_audit"
    " WHERE n > %(after)s ORDER BY n LIMIT 1) AS x"
    " UNION ALL"
    " SELECT y.n, c.hash, encode(sha256(convert_to(c.hash || y.text, 'UTF8')), 'hex')"
    f" FROM chain c CROSS JOIN LATERAL (SELECT n, {V2_TEXT} AS text FROM alert_audit"
    " WHERE n > c.n ORDER BY n LIMIT 1) AS y)"
    f" UPDATE alert_audit a SET prev_hash = c.prev_hash, hash = c.hash, hash_v = {V2}"
    " FROM chain c WHERE a.n = c.n"
)


async def seal_v2(conn: psycopg.AsyncConnection[Any], *, after: int) -> int:
    """Give every entry after ``after`` (an ``n``) its rule-v2 hash, in order; the number of
    entries sealed. Only for a bulk loader's own new entries: sealing rewrites the chain."""
    cur = await conn.execute(_SEAL_V2, {"after": after, "genesis": GENESIS})
    return cur.rowcount
