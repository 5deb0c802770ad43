"""Real servers for the tests: PostgreSQL and Mosquitto, started here on free ports.

A missing binary fails the run with the install command (never a skip).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from anju.errors import ServerError
from anju.servers import PrivateMosquitto, PrivatePostgres

DATA = Path(__file__).parent / "data"


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
