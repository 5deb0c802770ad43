"""``anju bench ingest --quick`` runs and reports the figures the issue names (no timing), on a
private server and on a given one (``--db``), in the given database's storage mode."""

from __future__ import annotations

from typing import Any

import pytest

from backend.db.migrate import StorageMode, migrate
from benches import ingest as bench_ingest
from tests.conftest import timescale_missing

pytestmark = pytest.mark.integration


def check_figures(out: dict[str, Any]) -> None:
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
    assert out["ingest_readings_per_s"] > 0 and out["bare_copy_rows_per_s"] > 0
    assert out["readings_stored_for_queries"] > 0


def test_quick_bench_reports_every_figure() -> None:
    out = bench_ingest.run(quick=True)
    check_figures(out)
    assert out["server"] == "private"
    # the private server preloads TimescaleDB when its binaries have it; auto takes it then
    assert out["timescaledb"] is (timescale_missing() is None)


def test_quick_bench_on_a_given_database_in_its_mode(db_url: str, storage: StorageMode) -> None:
    """--db: the given server in whichever mode its database has, reported truthfully; twice
    on the same database (a second run's data is not taken for redelivery)."""
    migrate(db_url, prefer=storage)
    for _ in range(2):
        out = bench_ingest.run(quick=True, db=db_url)
        check_figures(out)
        assert out["server"] == "given"
        assert out["timescaledb"] is (storage is StorageMode.TIMESCALE)
