"""Real servers for the tests: PostgreSQL and Mosquitto, started here on free ports.

A missing binary fails the run with the install command (never a skip).

Storage modes: the PostgreSQL started here preloads TimescaleDB whenever its binaries have it
(``ANJU_PG_BIN`` pointing at such an installation; ``ANJU_PG_TIMESCALE=off`` to opt out).
Tests that take the ``storage`` fixture run once per mode (``plain`` always, ``timescale`` when
the server has it), and tests that take ``timescale_only`` need it; when it is missing those are
skipped with the reason, and the terminal summary says so in a section of its own.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from anju.errors import ServerError
from anju.servers import PrivateMosquitto, PrivatePostgres, find_pg_bin, find_timescaledb
from backend.db.migrate import StorageMode

DATA = Path(__file__).parent / "data"
_NO_TS = "TimescaleDB mode not tested"


@functools.cache
def timescale_missing() -> str | None:
    """Why the PostgreSQL the tests start cannot preload TimescaleDB (None: it can)."""
    try:
        bindir = find_pg_bin()
    except ServerError as exc:
        return str(exc)
    if os.environ.get("ANJU_PG_TIMESCALE", "").lower() in ("0", "off", "no"):
        return "ANJU_PG_TIMESCALE=off"
    if find_timescaledb(bindir) is None:
        return (
            f"the PostgreSQL in {bindir} has no TimescaleDB (no extension/timescaledb.control"
            " with its loader library); set ANJU_PG_BIN to the bin folder of a PostgreSQL"
            " with TimescaleDB to run them"
        )
    return None


@pytest.fixture(params=[StorageMode.PLAIN, StorageMode.TIMESCALE], ids=["plain", "timescale"])
def storage(request: pytest.FixtureRequest) -> StorageMode:
    """The storage mode to migrate with: each test taking it runs in both modes."""
    mode: StorageMode = request.param
    if mode is StorageMode.TIMESCALE and (why := timescale_missing()):
        pytest.skip(f"{_NO_TS}: {why}")
    return mode


@pytest.fixture
def timescale_only() -> None:
    """For tests about the TimescaleDB mode only."""
    if why := timescale_missing():
        pytest.skip(f"{_NO_TS}: {why}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if _NO_TS in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("=", "TimescaleDB", yellow=True, bold=True)
        terminalreporter.write_line(
            f"{len(skipped)} tests of the TimescaleDB storage mode were NOT run:"
            f" {timescale_missing()}"
        )


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePostgres]:
    try:
        pg = PrivatePostgres(tmp_path_factory.mktemp("pg")).start()
    except ServerError as exc:
        pytest.fail(f"cannot start PostgreSQL for the tests: {exc}", pytrace=False)
    yield pg
    pg.destroy()


@pytest.fixture
def db_url(postgres: PrivatePostgres) -> str:
    """A fresh, empty database for one test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


class DatabaseCopies:
    """Fresh databases copied from one built once per session (``CREATE DATABASE ... TEMPLATE``):
    each test still gets a database of its own, but an expensive, deterministic setup (a
    generated past, say) is paid once per ``key`` instead of once per test."""

    def __init__(self, postgres: PrivatePostgres) -> None:
        self.postgres = postgres
        self.templates: dict[str, str] = {}

    async def copy(self, key: str, build: Callable[[str], Awaitable[None]]) -> str:
        """A fresh database copied from template ``key``, built first by ``build(url)`` (which
        must close every connection to it) when this session has not built it yet."""
        import psycopg

        template = self.templates.get(key)
        if template is None:
            template = f"tpl_{key}_{uuid.uuid4().hex[:8]}"  # a failed build is not reused
            await build(self.postgres.create_database(template))
            with psycopg.connect(self.postgres.url("postgres"), autocommit=True) as conn:
                # nobody connects to it any more (TimescaleDB's scheduler would: a template
                # in use cannot be copied)
                conn.execute(f'ALTER DATABASE "{template}" WITH ALLOW_CONNECTIONS false')
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (template,),
                )
            self.templates[key] = template
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.postgres.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.postgres.url(name)


@pytest.fixture(scope="session")
def db_copies(postgres: PrivatePostgres) -> DatabaseCopies:
    """See :class:`DatabaseCopies`."""
    return DatabaseCopies(postgres)


def _broker(tmp_path: Path, name: str) -> PrivateMosquitto:
    try:
        return PrivateMosquitto(tmp_path / name, name=name).start()
    except ServerError as exc:
        pytest.fail(f"cannot start Mosquitto for the tests: {exc}", pytrace=False)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    b = _broker(tmp_path, "uplink")
    yield b
    b.stop()


@pytest.fixture
def lan_broker(tmp_path: Path) -> Iterator[PrivateMosquitto]:
    b = _broker(tmp_path, "lan")
    yield b
    b.stop()


@pytest.fixture
def city_file() -> Path:
    return DATA / "city.yaml"
