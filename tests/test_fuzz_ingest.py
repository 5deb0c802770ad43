"""Fuzz (bounded, in CI): hostile uplink batches through the ingest writers into a real
PostgreSQL. Nothing escapes the writers; every record that can be read is confirmed; every
record decoded is committed and handed to the rules; every record rejected with a sequence
number is a dead letter. Longer runs: ``anju fuzz ingest --minutes N``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from anju import fuzz
from backend import fuzzing

pytestmark = pytest.mark.integration


def test_the_ingest_writer_takes_anything(db_url: str) -> None:
    target = fuzzing.prepare(db_url)
    try:

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(fuzz.batches())
        def prop(example: fuzz.Batch) -> None:
            target.check(example)

        prop()
    finally:
        target.close()
