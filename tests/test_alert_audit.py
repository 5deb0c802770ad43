"""The audit log's hash chain on a real database: ``anju alerts verify-audit`` passes an intact
chain and names the entry that was altered (an UPDATE) or removed (a DELETE). More in
``test_audit_chain.py`` (rules, every column, old chains) and ``test_audit_anchor.py``."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.contract import Audience
from backend.alerting.testing import T0, Feeder
from backend.db.migrate import migrate
from backend.store import AlertStore

pytestmark = pytest.mark.integration


def verify(db_url: str) -> tuple[int, str]:
    p = subprocess.run(
        [sys.executable, "-m", "anju", "alerts", "verify-audit", "--db", db_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return p.returncode, p.stdout + p.stderr


async def test_verify_audit_detects_an_altered_and_a_removed_entry(db_url: str) -> None:
    migrate(db_url)
    f = Feeder()
    [raised] = f.event("c0-smoke_detector-0", 0, "alarm")
    book = f.engine.book
    acked = book.acknowledge(raised.alert, Audience.FIRE, by="119", note="", now_ms=T0 + 1_000)
    f.event("c0-emergency_button-0", 5, "pressed")
    resolved = book.resolve(raised.alert, T0 + 9_000, by="王", note="cooking")
    changes = [raised, acked, *f.changes[1:], resolved]
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
        store = AlertStore(pool)
        for i, ch in enumerate(changes):
            assert ch is not None
            await store.save(ch, T0 + i)
        assert (await store.verify_audit()).ok

    rc, out = verify(db_url)
    assert (rc, out.splitlines()[0]) == (
        0,
        "audit chain ok: 4 entries up to n=4, against no anchors (a cut tail goes unseen)",
    )

    # Someone rewrites who acknowledged the alarm (entry 2), as if it had been the property
    # company: the chain is broken exactly there.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alert_audit SET entry = jsonb_set(entry, '{actor}', '\"property\"') WHERE n = 2"
        )
    rc, out = verify(db_url)
    assert rc == 1
    assert "audit chain BROKEN: 1 problem in 4 entries" in out
    assert "  entry 2: its content does not match its hash" in out

    # Put it back: intact again. Then remove entry 3: the break shows at entry 4.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alert_audit SET entry = jsonb_set(entry, '{actor}', '\"119\"') WHERE n = 2"
        )
        assert verify(db_url)[0] == 0
        conn.execute("DELETE FROM alert_audit WHERE n = 3")
    rc, out = verify(db_url)
    assert rc == 1 and "  entry 4: its prev_hash is not the hash of the entry before it" in out


def test_verify_audit_says_when_the_database_is_unreachable() -> None:
    rc, out = verify("postgresql://anju@127.0.0.1:1/none")
    assert rc == 2 and "cannot reach the database" in out
