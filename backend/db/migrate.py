"""Versioned schema migrations: ``backend/db/migrations/NNNN_name.sql``, applied in order.

Safe to run twice (applied versions are recorded) and from two processes at once (a session
advisory lock serialises them). Each migration runs in its own transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger("anju.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x616E6A75  # "anju"


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path


def available() -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def migrate(conninfo: str) -> list[str]:
    """Apply every migration not yet applied; return the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for m in available():
                if m.version in done:
                    continue
                with conn.transaction():
                    conn.execute(m.path.read_text(encoding="utf-8").encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (m.version,)
                    )
                log.info("applied migration %s", m.version)
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
