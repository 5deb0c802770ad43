"""The audit chain's hash rule v2 on a real PostgreSQL (issue 10, item 8): numbers that jsonb
rewrites verify; tampering with any covered column, or with an alert's row, is reported, every
broken entry of it; a chain written by the code before migration 0006 (rule v1) still verifies
after it, and the new entries follow on from it."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from anju.contract import Audience
from backend.alerting.lifecycle import Change
from backend.alerting.testing import T0, Feeder
from backend.audit import GENESIS, V1, V2, check_chain, seal_v2, sha, v1_text
from backend.db import migrate as migrate_mod
from backend.db.migrate import migrate
from backend.store import AlertStore, _dt

# Values whose jsonb text is not Python's: -0.0 (stored as 0.0), 1e16 (stored as digits),
# 1.5e-07 (stored as 0.00000015), and a string with characters JSON may escape either way.
SET_ACTOR = (
    "UPDATE alert_audit SET entry = jsonb_set(entry, '{actor}', to_jsonb(%s::text)) WHERE n = %s"
)
ODD = {"pressure_mpa": -0.0, "flow": 1e16, "tiny": 1.5e-07, "big": 2**63 - 1, "t": "é\u2028\t"}


def cli(db_url: str, *extra: str) -> tuple[int, str]:
    p = subprocess.run(
        [sys.executable, "-m", "anju", "alerts", "verify-audit", "--db", db_url, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return p.returncode, p.stdout + p.stderr


def story(odd: dict[str, Any] | None = None) -> list[Change]:
    """Six changes of three alerts: a fire alarm raised, acknowledged, resolved; an emergency
    button; a second detector; its acknowledgement. ``odd`` goes into every evidence."""
    f = Feeder()
    [raised] = f.event("c0-smoke_detector-0", 0, "alarm")
    book = f.engine.book
    acked = book.acknowledge(raised.alert, Audience.FIRE, by="119", note="", now_ms=T0 + 1_000)
    [button] = f.event("c0-emergency_button-0", 5, "pressed")
    [second] = [c for c in f.event("c0-smoke_detector-1", 6, "alarm") if c.action == "raised"]
    acked2 = book.acknowledge(second.alert, Audience.FIRE, by="119", note="", now_ms=T0 + 7_000)
    resolved = book.resolve(raised.alert, T0 + 9_000, by="王", note="cooking")
    out = [raised, acked, button, second, acked2, resolved]
    assert all(c is not None for c in out)
    if odd:
        for c in out:
            assert c is not None
            c.payload["evidence"].update(odd)
    return [c for c in out if c is not None]


async def save_all(db_url: str, changes: list[Change], t0: int = T0) -> None:
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
        store = AlertStore(pool)
        for i, ch in enumerate(changes):
            await store.save(ch, t0 + i)


async def verify(db_url: str) -> Any:
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
        return await AlertStore(pool).verify_audit(anchors=[])


@pytest.mark.integration
async def test_numbers_jsonb_rewrites_verify(db_url: str) -> None:
    migrate(db_url)
    await save_all(db_url, story(ODD))
    report = await verify(db_url)
    assert report.ok, report.problems
    assert (report.entries, report.head) == (6, 6)
    assert cli(db_url)[0] == 0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT hash_v, entry FROM alert_audit ORDER BY n").fetchall()
    assert {v for v, _ in rows} == {V2}
    # What the old rule would have hashed is not what the database gives back.
    evidence = rows[0][1]["payload"]["evidence"]
    assert json.dumps(evidence["pressure_mpa"]) == "0.0" and evidence["flow"] == 10**16


@pytest.mark.integration
async def test_every_tampered_column_and_entry_is_reported(db_url: str) -> None:
    migrate(db_url)
    changes = story()
    await save_all(db_url, changes)
    first, second = changes[0].alert.id, changes[3].alert.id
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alert_audit SET entry = jsonb_set(entry, '{actor}', '\"x\"') WHERE n=1"
        )
        conn.execute("UPDATE alert_audit SET actor = 'property' WHERE n = 2")
        conn.execute("UPDATE alert_audit SET at = at - interval '1 minute' WHERE n = 3")
        conn.execute("UPDATE alert_audit SET action = 'updated' WHERE n = 5")
        conn.execute(
            "UPDATE alert_audit SET entry = jsonb_set(entry, '{payload,severity}', '\"info\"')"
            " WHERE n = 6"
        )
        # The alert row of the second detector, as if its alarm had been minor.
        conn.execute(
            "UPDATE alerts SET payload = jsonb_set(payload, '{severity}', '\"minor\"'),"
            " severity = 'minor' WHERE id = %s",
            (second,),
        )
    report = await verify(db_url)
    bad = {(p.n, p.alert_id): p.reason for p in report.problems}
    assert {n for n, a in bad if a is None} == {1, 2, 3, 5, 6}, report.problems
    assert all("does not match its hash" in r for (_, a), r in bad.items() if a is None)
    # The second detector's row (its last entry is 5), and the first alarm's row, which no
    # longer matches its last entry (6, whose payload was altered).
    assert "another payload" in bad[(5, second)] and "another payload" in bad[(6, first)]
    assert report.first_bad == 1 and not report.ok and len(report.problems) == 7

    rc, out = cli(db_url)
    assert rc == 1 and "7 problems in 6 entries" in out, out
    for n in (1, 2, 3, 5, 6):
        assert f"  entry {n}: its content does not match its hash" in out
    assert f"  entry 5: alert {second} has another payload" in out
    rc, out = cli(db_url, "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["broken_count"] == 7 and doc["first_bad"] == 1


@pytest.mark.integration
async def test_removed_inserted_and_rehashed_entries_and_rows(db_url: str) -> None:
    migrate(db_url)
    changes = story()
    await save_all(db_url, changes)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Entry 2 removed; entry 5's hash replaced by one that fits its new content; the
        # alert of the emergency button loses its row; a row appears with no audit.
        conn.execute("DELETE FROM alert_audit WHERE n = 2")
        conn.execute("UPDATE alert_audit SET actor = 'x', hash = repeat('a', 64) WHERE n = 5")
        conn.execute("DELETE FROM alerts WHERE id = %s", (changes[2].alert.id,))
        conn.execute(
            "INSERT INTO alerts SELECT gen_random_uuid(), type, device_id, community_id,"
            " district, severity, state, occurred_at, raised_at, updated_at, resolved_at,"
            " payload FROM alerts WHERE state = 'resolved' LIMIT 1"
        )
    report = await verify(db_url)
    reasons = [(p.n, p.reason) for p in report.problems]
    assert any(n == 3 and "prev_hash" in r and "entries 2..2 are missing" in r for n, r in reasons)
    assert any(n == 5 and "does not match" in r for n, r in reasons)
    assert any(n == 6 and "prev_hash" in r for n, r in reasons)  # its link to 5 broke
    assert any("has audit entries but no alert row" in r for _, r in reasons)
    assert any(n is None and "has no audit entry" in r for n, r in reasons)


def _migrate_before_0006(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    every = migrate_mod.available
    with monkeypatch.context() as m:
        m.setattr(migrate_mod, "available", lambda: [x for x in every() if x.version < "0006"])
        migrate(db_url)


def save_v1(conn: psycopg.Connection[Any], change: Change, now_ms: int) -> None:
    """What ``AlertStore.save`` did before migration 0006: the entry hashed as Python's text."""
    a, p, row = change.alert, change.payload, change.row
    entry = {
        "alert_id": a.id,
        "at": _dt(now_ms).isoformat(),
        "action": change.action,
        "actor": change.actor,
        "payload": p,
    }
    canon = v1_text(entry)
    with conn.transaction():
        conn.execute(
            "INSERT INTO alerts (id, type, device_id, community_id, district, severity,"
            " state, occurred_at, raised_at, updated_at, resolved_at, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
            " severity = excluded.severity, updated_at = excluded.updated_at,"
            " resolved_at = excluded.resolved_at, payload = excluded.payload",
            (
                a.id, a.type, a.device.id, a.device.community_id, a.device.district,
                row.severity, row.state, _dt(row.occurred_at), _dt(row.raised_at),
                _dt(row.updated_at), _dt(row.resolved_at) if row.resolved_at else None,
                json.dumps(p),
            ),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO alert_audit (alert_id, at, action, actor, entry, prev_hash, hash)"
            " SELECT %s, %s, %s, %s, %s::jsonb, prev,"
            " encode(sha256(convert_to(prev || %s, 'UTF8')), 'hex')"
            " FROM (SELECT coalesce((SELECT hash FROM alert_audit ORDER BY n DESC"
            " LIMIT 1), %s) AS prev) AS last RETURNING n",
            (a.id, _dt(now_ms), change.action, change.actor, canon, canon, GENESIS),
        )


@pytest.mark.integration
async def test_an_old_chain_verifies_after_the_migration(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _migrate_before_0006(db_url, monkeypatch)
    changes = story(ODD)
    with psycopg.connect(db_url) as conn:
        for i, ch in enumerate(changes[:4]):
            save_v1(conn, ch, T0 + i)
    assert migrate(db_url) and cli(db_url)[0] == 0  # the v1 entries, -0.0 and 1e16 included
    await save_all(db_url, changes[4:], T0 + 4)
    report = await verify(db_url)
    assert report.ok and report.entries == 6, report.problems
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT n, hash_v, prev_hash, hash FROM alert_audit ORDER BY n")
        versions = [(n, v) for n, v, _, _ in rows.fetchall()]
        rules = conn.execute("SELECT hash_v, from_n FROM alert_audit_hash_rules ORDER BY 1")
        assert rules.fetchall() == [(V1, 0), (V2, 5)]
        assert versions == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]

        # An old entry altered is still found, by the old rule.
        conn.execute(
            "UPDATE alert_audit SET entry = jsonb_set(entry, '{actor}', '\"x\"') WHERE n=2"
        )
        assert [p.n for p in (await verify(db_url)).problems] == [2]
        conn.execute(
            "UPDATE alert_audit SET entry = jsonb_set(entry, '{actor}', '\"119\"') WHERE n=2"
        )
        # A new entry rewritten under the old, weaker rule (its hash made to fit, and the
        # next link mended) is a downgrade, and reported as one.
        n5 = conn.execute("SELECT entry::text, prev_hash FROM alert_audit WHERE n = 5").fetchone()
        assert n5 is not None
        entry5 = json.loads(n5[0])
        conn.execute(
            "UPDATE alert_audit SET hash_v = 1, actor = 'forged', hash = %s WHERE n = 5",
            (sha(n5[1], v1_text(entry5)),),
        )
        conn.execute(
            "UPDATE alert_audit SET prev_hash = (SELECT hash FROM alert_audit WHERE n = 5)"
            " WHERE n = 6"
        )
    problems = (await verify(db_url)).problems
    assert [p.n for p in problems if p.alert_id is None][:1] == [5]
    assert "written by rule v1 where v2 applies" in problems[0].reason


@pytest.mark.integration
async def test_a_bulk_load_is_sealed_by_rule_v2(db_url: str) -> None:
    migrate(db_url)
    changes = story(ODD)
    await save_all(db_url, changes[:2])
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        async with (
            conn.cursor() as cur,
            cur.copy(
                "COPY alert_audit (alert_id, at, action, actor, entry, prev_hash, hash) FROM STDIN"
            ) as cp,
        ):
            for i, ch in enumerate(changes[2:]):
                e = {"alert_id": ch.alert.id, "action": ch.action, "payload": ch.payload}
                await cp.write_row(
                    (ch.alert.id, _dt(T0 + i), ch.action, ch.actor, json.dumps(e), "", "")
                )
        assert await seal_v2(conn, after=2) == 4
        await conn.commit()
    report = await verify(db_url)
    # Every entry holds (the alerts table was not loaded: only alert rows are reported).
    assert report.entries == 6 and report.problems
    assert all(p.alert_id is not None for p in report.problems), report


def test_check_chain_without_a_database() -> None:
    """Pure: the v1 readings of numbers jsonb rewrote, and every problem of a chain."""
    e = {"v": -0.0, "w": 1e16, "x": [0.0, 1], "y": 1.2345678901234568e20}
    h1 = sha(GENESIS, v1_text(e))
    # jsonb's text of it
    stored = '{"v": 0.0, "w": 10000000000000000, "x": [0.0, 1], "y": 123456789012345680000}'
    assert check_chain([(1, V1, GENESIS, h1, stored)]).ok
    assert not check_chain([(1, V1, GENESIS, h1, stored.replace("[0.0, 1]", "[0.0, 2]"))]).ok
    # Entries Python cannot have written (edited in the database) are reported, not raised.
    for odd in ('{"v": 1' + "0" * 5000 + "}", "[" * 5000 + "]" * 5000):
        assert not check_chain([(1, V1, GENESIS, h1, odd)]).ok
    t = "[1]"
    rows = [(1, V2, GENESIS, sha(GENESIS, t), t), (2, V2, "x", "y", t), (4, V2, "y", "z", t)]
    r = check_chain(rows, rules=[(V2, 0)])
    # Entry 2: its link and its content; entry 4 only its content (a gap in n alone is no
    # problem: a refused insert uses up a number).
    assert [p.n for p in r.problems] == [2, 2, 4] and r.head == 4


_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")  # storable
_numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 0.0, 1e16, -1e16, 1e22, 1.5e-07, 2.0**53, 1e300]),
)
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), _numbers, st.text(_chars, max_size=8)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(_chars, max_size=4), inner, max_size=4)
    ),
    max_leaves=10,  # below V1_MAX_AMBIGUOUS numbers in one entry
)


@pytest.mark.integration
def test_rule_v1_verifies_from_what_jsonb_kept(db_url: str) -> None:
    """Property: whatever Python hashed by rule v1, the verifier finds it again from the text
    PostgreSQL gives back for the stored jsonb (at most ``V1_MAX_AMBIGUOUS`` ambiguous numbers:
    the strategy stays below)."""
    with psycopg.connect(db_url, autocommit=True) as conn:

        @settings(max_examples=200, deadline=None, database=None)
        @given(st.dictionaries(st.text(_chars, max_size=6), _values, max_size=1))
        def check(entry: dict[str, Any]) -> None:
            text = v1_text(entry)
            row = conn.execute("SELECT %s::jsonb::text", (text,)).fetchone()
            assert row is not None
            h = sha(GENESIS, text)
            assert check_chain([(1, V1, GENESIS, h, row[0])]).ok, (text, row[0])

        check()
