"""Fuzz (bounded, in CI): the gateway's LAN decoder into a real outbox (SQLite). No exception
escapes ``decode_device_message``; every accepted item is canonical, stored and read back
unchanged. Longer runs: ``anju fuzz lan --minutes N``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from anju import fuzz
from anju.fuzz import Fuzzing
from gateway import fuzz as lan_fuzz


@pytest.fixture(scope="module")
def target() -> Iterator[Fuzzing]:
    fz = lan_fuzz.prepare(None)
    yield fz
    fz.close()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(example=lan_fuzz.messages())
def test_the_lan_decoder_takes_anything_and_stores_what_it_accepts(
    target: Fuzzing, example: tuple[str, bytes]
) -> None:
    target.check(example)


def test_the_fuzz_command_runs_the_lan_target() -> None:
    figures = fuzz.run("lan", minutes=0.02)
    assert figures.examples > 0 and figures.failures == 0, figures.failed
