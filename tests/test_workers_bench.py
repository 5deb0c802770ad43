"""``anju bench ingest|alerts --workers N`` (issue 11) run and report the same figures plus
``workers`` (values are measured by full runs, never asserted here)."""

from __future__ import annotations

import pytest

from benches import ingest as bench_ingest
from benches.alerts import run as alerts_run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_ingest_bench_with_two_workers() -> None:
    out = bench_ingest.run(quick=True, workers=2)
    assert out["workers"] == 2
    assert out["ingest_readings_per_s"] > 0 and out["readings_stored_for_queries"] > 0


def test_alerts_bench_with_two_workers() -> None:
    out = alerts_run(quick=True, workers=2)
    assert out["workers"] == 2
    assert out["probes_lost"] == 0  # every probe's alert reached the fire topic, from the leader
    assert 0 < out["latency_p50_ms"] <= out["latency_p99_ms"]
