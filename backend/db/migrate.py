"""Versioned schema migrations in ``backend/db/migrations``, applied in name order.

A migration is ``NNNN_name.sql`` (for every database) or a pair of variants
``NNNN_name.plain.sql`` / ``NNNN_name.timescale.sql``, of which the one for this database's
storage mode is applied. The mode is decided once, the first time migrations run on a database
(TimescaleDB when the extension can be created here, else plain PostgreSQL with native
partitioning), recorded in ``anju_storage`` and kept from then on: a schema built one way is
never half-converted to the other.

Safe to run twice (applied versions are recorded) and from two processes at once (a session
advisory lock serialises them). Each migration runs in its own transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psycopg

from anju.errors import AnjuError

log = logging.getLogger("anju.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x616E6A75  # "anju"
OUTSIDE_MARKER = "-- anju: outside transaction"


class StorageMode(StrEnum):
    PLAIN = "plain"
    TIMESCALE = "timescale"


class MigrationError(AnjuError):
    """A migration file set is inconsistent, or a migration failed; names the file."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.path = path
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    common: Path | None = None
    plain: Path | None = None
    timescale: Path | None = None

    def path_for(self, mode: StorageMode) -> Path:
        variant = self.plain if mode is StorageMode.PLAIN else self.timescale
        path = self.common or variant
        if path is None:
            other = self.timescale or self.plain
            assert other is not None
            raise MigrationError(other, f"no variant for {mode} storage")
        return path


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations in version order; a version has one common file or both variants."""
    found: dict[str, dict[str, Path]] = {}
    for p in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql")):
        version, _, rest = p.name.partition(".")
        variant = rest.removesuffix("sql").rstrip(".") or "common"
        if variant not in ("common", "plain", "timescale"):
            raise MigrationError(p, "expected NNNN_name.sql, .plain.sql or .timescale.sql")
        found.setdefault(version, {})[variant] = p
    out = []
    for version in sorted(found):
        v = found[version]
        if "common" in v and len(v) > 1:
            raise MigrationError(v["common"], "a version is either common or has variants")
        if "common" not in v and len(v) != 2:
            raise MigrationError(next(iter(v.values())), "needs both .plain and .timescale")
        out.append(Migration(version, v.get("common"), v.get("plain"), v.get("timescale")))
    return out


def split_outside(sql: str) -> tuple[str, list[str]]:
    """The part run in the migration's transaction, and the statements after the line
    ``-- anju: outside transaction`` (run one by one in autocommit, e.g. ``CALL`` procedures
    that refuse a transaction block; each statement ends with ``;`` at the end of a line)."""
    inside, marker, rest = sql.partition(OUTSIDE_MARKER)
    if not marker:
        return sql, []
    stmts: list[str] = []
    current: list[str] = []
    for line in rest.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            stmts.append("\n".join(current).strip())
            current = []
    if any(x.strip() for x in current):
        stmts.append("\n".join(current).strip())
    return inside, stmts


def detect_timescale(conn: psycopg.Connection) -> bool:
    """True when TimescaleDB is installed here, or available and preloaded (so it can be)."""
    row = conn.execute(
        "SELECT installed_version IS NOT NULL,"
        " coalesce(current_setting('shared_preload_libraries', true), '') LIKE '%timescaledb%'"
        " FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None and (bool(row[0]) or bool(row[1]))


def storage_mode(conn: psycopg.Connection, *, prefer: StorageMode | None = None) -> StorageMode:
    """The mode recorded for this database, deciding and recording it on first use."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS anju_storage ("
        " only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
        " mode text NOT NULL, decided_at timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT mode FROM anju_storage").fetchone()
    if row is not None:
        return StorageMode(row[0])
    has_ts = detect_timescale(conn)
    mode = prefer or (StorageMode.TIMESCALE if has_ts else StorageMode.PLAIN)
    if mode is StorageMode.TIMESCALE and not has_ts:
        raise AnjuError("TimescaleDB storage was asked for, but the extension is not available")
    conn.execute("INSERT INTO anju_storage (mode) VALUES (%s)", (str(mode),))
    log.info(
        "storage: %s (%s)",
        mode,
        "TimescaleDB hypertables, compression, continuous aggregates"
        if mode is StorageMode.TIMESCALE
        else "PostgreSQL native partitioning and rollup tables",
    )
    return mode


def migrate(conninfo: str, *, prefer: StorageMode | None = None) -> list[str]:
    """Apply every migration not yet applied; return the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            mode = storage_mode(conn, prefer=prefer)
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for m in available():
                if m.version in done:
                    continue
                path = m.path_for(mode)
                inside, outside = split_outside(path.read_text(encoding="utf-8"))
                with conn.transaction():
                    conn.execute(inside.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (m.version,)
                    )
                for stmt in outside:
                    conn.execute(stmt.encode())
                log.info("applied migration %s", path.name)
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
