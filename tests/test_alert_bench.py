"""``anju bench alerts --quick`` runs end to end and reports the figures issue 5 names (their
values are measured by full runs, never asserted here)."""

from __future__ import annotations

import math

import pytest

from benches.alerts import run

pytestmark = pytest.mark.integration

KEYS = {
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "background_readings_per_s",
    "eval_readings_per_s_per_core",
}


def test_quick_alerts_benchmark_reports_every_figure() -> None:
    figures = run(quick=True)
    assert figures.keys() >= KEYS
    for key in KEYS:
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] > 0
    assert figures["latency_p50_ms"] <= figures["latency_p99_ms"] <= figures["latency_max_ms"]
    assert figures["probes_lost"] == 0  # every probe's alert reached the fire topic
