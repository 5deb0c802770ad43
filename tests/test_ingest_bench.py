"""``anju bench ingest --quick`` runs and reports the figures the issue names (no timing)."""

from __future__ import annotations

import pytest

from backend import bench_ingest

pytestmark = pytest.mark.integration


def test_quick_bench_reports_every_figure() -> None:
    out = bench_ingest.run(quick=True)
    assert {
        "ingest_readings_per_s",
        "bare_copy_rows_per_s",
        "ratio",
        "lag_p50_ms",
        "lag_p99_ms",
        "query_ms",
        "timescaledb",
    } <= set(out)
    assert set(out["query_ms"]) == {
        "latest_community",
        "series_day_5min_raw",
        "series_week_hourly",
        "series_month_daily",
        "events_community_type",
    }
    assert out["timescaledb"] is False
    assert out["ingest_readings_per_s"] > 0 and out["bare_copy_rows_per_s"] > 0
