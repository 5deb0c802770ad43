"""Fuzz (bounded, in CI): hostile records through the decoder, the rules and the alert store
on a real PostgreSQL. Nothing escapes; every record decoded is evaluated; every alert change
is stored with its audit entry; every rule state is stored. Longer runs:
``anju fuzz rules --minutes N``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from backend import fuzzing_rules

pytestmark = pytest.mark.integration


def test_the_rules_and_the_alert_store_take_anything(db_url: str) -> None:
    target = fuzzing_rules.prepare(db_url)
    try:

        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(fuzzing_rules.raw_records())
        def prop(raws: list[dict[str, Any]]) -> None:
            target.check(raws)

        prop()
    finally:
        target.close()
