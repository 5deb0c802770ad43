"""Versioned schema migrations in ``backend/db/migrations``, applied in name order.

A migration is ``NNNN_name.sql`` (for every database) or a pair of variants
``NNNN_name.plain.sql`` / ``NNNN_name.timescale.sql``, of which the one for this database's
storage mode is applied. The mode is decided once, the first time migrations run on a database,
recorded in ``anju_storage`` and kept from then on: a schema built one way is never
half-converted to the other. ``auto`` (the default) takes TimescaleDB when this role can have it
(the extension is in the database, or the server preloads it and this role may create it), else
plain PostgreSQL with native partitioning; ``timescale`` and ``plain`` insist.

TimescaleDB is detected through what any role may read (``pg_extension``,
``pg_available_extension_versions``, and the settings the preloaded library defines), never
through ``shared_preload_libraries``, which only a superuser may read.

Safe to run twice and from two processes at once (a session advisory lock serialises them).
Each migration runs in its own transaction; statements after ``-- anju: outside transaction``
run after it, one by one, and the version is complete only when they all succeeded: a version
whose outside part failed is marked incomplete, and the next run retries that part (it must be
safe to repeat) before going on.
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
STORAGE_CHOICES = ("auto", "timescale", "plain")


class StorageMode(StrEnum):
    PLAIN = "plain"
    TIMESCALE = "timescale"


def parse_storage(choice: str | None) -> StorageMode | None:
    """``auto`` (or None) -> None; ``plain`` / ``timescale`` -> that mode."""
    if choice is None or choice == "auto":
        return None
    try:
        return StorageMode(choice)
    except ValueError:
        raise AnjuError(
            f"storage {choice!r}: expected one of {', '.join(STORAGE_CHOICES)}"
        ) from None


class MigrationError(AnjuError):
    """A migration file set is inconsistent, or a migration failed; names the file."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.path = path
        self.detail = detail


class StorageError(AnjuError):
    """The storage mode asked for cannot be had on this database; says what to do."""


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


# Every expression is evaluated whether or not the extension is known here (no row-dependent
# short cut), and each reads only what any role may: the test suite runs it as such a role.
_PROBE = """
SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
       v.version,
       v.trusted,
       v.superuser,
       EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.max_background_workers'),
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
       has_database_privilege(current_database(), 'CREATE'),
       current_user::text,
       current_database()::text
FROM (SELECT 1) one
LEFT JOIN pg_available_extensions a ON a.name = 'timescaledb'
LEFT JOIN pg_available_extension_versions v
       ON v.name = 'timescaledb' AND v.version = a.default_version
"""


@dataclass(frozen=True, slots=True)
class TimescaleProbe:
    """What this role can see of TimescaleDB on this server and database."""

    installed: str | None  # extversion in this database
    available: str | None  # default version the server has files for
    trusted: bool  # the extension may be created by a non-superuser with CREATE
    needs_superuser: bool
    preloaded: bool  # the loader's settings exist: shared_preload_libraries has it
    superuser: bool
    can_create_in_db: bool
    role: str
    database: str

    @property
    def usable(self) -> bool:
        """TimescaleDB is in this database, or can be created here by this role now."""
        return self.installed is not None or self.why_not() is None

    def why_not(self) -> str | None:
        """Why this role cannot create the extension here (None: it can, or it is there)."""
        if self.installed is not None:
            return None
        if self.available is None:
            return "TimescaleDB is not installed on this PostgreSQL server"
        if not self.preloaded:
            return (
                "TimescaleDB is installed on this server but not preloaded: an administrator"
                " must add timescaledb to shared_preload_libraries and restart PostgreSQL"
            )
        if not (self.superuser or (self.trusted and self.can_create_in_db)):
            return (
                f"the extension must be created by an administrator: run"
                f" `CREATE EXTENSION timescaledb;` in database {self.database!r} as a"
                f" superuser (role {self.role!r} may not create it), then migrate again"
            )
        return None


def probe_timescale(conn: psycopg.Connection) -> TimescaleProbe:
    row = conn.execute(_PROBE).fetchone()
    assert row is not None
    inst, avail, trusted, su_only, preloaded, rolsuper, create, role, db = row
    return TimescaleProbe(
        installed=inst,
        available=avail,
        trusted=bool(trusted),
        needs_superuser=bool(su_only),
        preloaded=bool(preloaded),
        superuser=bool(rolsuper),
        can_create_in_db=bool(create),
        role=role,
        database=db,
    )


def detect_timescale(conn: psycopg.Connection) -> bool:
    """True when TimescaleDB is in this database or this role can create it now."""
    return probe_timescale(conn).usable


def storage_mode(conn: psycopg.Connection, *, prefer: StorageMode | None = None) -> StorageMode:
    """The mode recorded for this database, deciding and recording it on first use (creating
    the TimescaleDB extension when that mode is chosen and it is not there yet)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS anju_storage ("
        " only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),"
        " mode text NOT NULL, decided_at timestamptz NOT NULL DEFAULT now())"
    )
    row = conn.execute("SELECT mode FROM anju_storage").fetchone()
    if row is not None:
        recorded = StorageMode(row[0])
        if prefer is not None and prefer is not recorded:
            raise StorageError(
                f"this database was set up for {recorded} storage and keeps it; {prefer} was"
                f" asked for (use --storage {recorded} or auto, or a new database)"
            )
        return recorded
    probe = probe_timescale(conn)
    reason = probe.why_not()
    if prefer is StorageMode.PLAIN:
        mode = StorageMode.PLAIN
    elif probe.usable:
        mode = StorageMode.TIMESCALE
    elif prefer is StorageMode.TIMESCALE:
        raise StorageError(f"TimescaleDB storage was asked for, but {reason}")
    elif probe.available is not None and probe.preloaded:
        # The server is set up for TimescaleDB: choosing plain storage for good here would be
        # a silent surprise. Say what to do instead.
        raise StorageError(f"this server has TimescaleDB, but {reason}; or choose --storage plain")
    else:
        if probe.available is not None:
            log.warning("storage: plain PostgreSQL (%s)", reason)
        mode = StorageMode.PLAIN
    if mode is StorageMode.TIMESCALE and probe.installed is None:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StorageError(
                f"role {probe.role!r} may not create the TimescaleDB extension ({exc});"
                f" an administrator must run `CREATE EXTENSION timescaledb;` in database"
                f" {probe.database!r}, or choose --storage plain"
            ) from exc
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
    """Apply every migration not yet applied (or not yet complete); return the versions
    completed now. A failure raises ``MigrationError`` naming the file."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            # false: the transaction part committed, the outside part not yet done
            conn.execute(
                "ALTER TABLE schema_migrations"
                " ADD COLUMN IF NOT EXISTS complete boolean NOT NULL DEFAULT true"
            )
            mode = storage_mode(conn, prefer=prefer)
            state: dict[str, bool] = {
                r[0]: r[1] for r in conn.execute("SELECT version, complete FROM schema_migrations")
            }
            for m in available():
                if state.get(m.version) is True:
                    continue
                path = m.path_for(mode)
                inside, outside = split_outside(path.read_text(encoding="utf-8"))
                if m.version not in state:
                    try:
                        with conn.transaction():
                            conn.execute(inside.encode())
                            conn.execute(
                                "INSERT INTO schema_migrations (version, complete) VALUES (%s, %s)",
                                (m.version, not outside),
                            )
                    except psycopg.errors.InsufficientPrivilege as exc:
                        raise MigrationError(
                            path, f"{str(exc).strip()} (an administrator must apply it)"
                        ) from exc
                else:
                    log.info("completing migration %s (its outside part failed before)", path.name)
                for stmt in outside:
                    try:
                        conn.execute(stmt.encode())
                    except psycopg.Error as exc:
                        if isinstance(exc, psycopg.OperationalError) and conn.closed:
                            raise
                        raise MigrationError(
                            path,
                            f"{str(exc).strip()}; the version stays incomplete and this"
                            f" statement is retried by the next migrate: {stmt[:120]}",
                        ) from exc
                if outside:
                    conn.execute(
                        "UPDATE schema_migrations SET complete = true WHERE version = %s",
                        (m.version,),
                    )
                log.info("applied migration %s", path.name)
                applied_now.append(m.version)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
