"""``anju bench supervision``: a generated year of a 300-community city (a month of 20 with
``--quick``), rolled up, then every supervision query timed (best of three).

``query_ms_max`` is the slowest query with the monthly figures materialised (best of three),
``query_ms_max_cold`` the slowest with nothing materialised (one run); each query's times are
under ``queries`` and ``queries_cold``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

from anju.registry import CityIndex, parse_registry
from anju.servers import PrivatePostgres
from backend.db.migrate import migrate
from backend.supervision.credit import community_scorecard, evaluate_month
from backend.supervision.history import write_bulk
from backend.supervision.measures import Level, Period, Scope, alerts_by_type, figures, month_bounds
from backend.supervision.rollup import refresh, sync_registry
from backend.supervision.ruleset import load_rules
from device_simulators.registrygen import CityPlan, generate_registry


async def _timed(fn: Callable[[], Awaitable[Any]], tries: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(tries):
        t0 = time.perf_counter()
        out = await fn()
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best, out


async def _main(quick: bool, url: str) -> dict[str, Any]:
    communities, days = (20, 35) if quick else (300, 365)
    city = CityIndex(parse_registry(generate_registry(CityPlan(communities=communities))))
    end = date(2026, 11, 1)
    start = end - timedelta(days=days)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await sync_registry(conn, city, today=end)
        t0 = time.perf_counter()
        alerts = await write_bulk(conn, city, days=days, end=end)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await refresh(conn)
        refresh_s = time.perf_counter() - t0
        await conn.execute("ANALYZE")
        # Late data: one more alert's worth of audit entries, then an incremental refresh.
        t0 = time.perf_counter()
        await refresh(conn)
        refresh_idle_ms = (time.perf_counter() - t0) * 1000
        figures_out = await _measure(conn, city, start, end)
    return {
        "communities": communities,
        "days": days,
        "alerts": alerts,
        "generate_s": round(gen_s, 1),
        "refresh_full_s": round(refresh_s, 1),
        "refresh_idle_ms": round(refresh_idle_ms, 1),
        **figures_out,
    }


async def _measure(
    conn: AsyncConnection, city: CityIndex, start: date, end: date
) -> dict[str, Any]:
    month = month_bounds(end - timedelta(days=1))
    rules = load_rules()
    one = sorted(city.communities)[0]
    district = city.registry.districts[0].code
    queries: dict[str, Callable[[], Awaitable[Any]]] = {
        "ranking_month": lambda: figures(
            conn, level=Level.PROPERTY, period=Period.MONTH, start=month[0], end=month[1]
        ),
        "property_days_of_month": lambda: figures(
            conn, level=Level.PROPERTY, period=Period.DAY, start=month[0], end=month[1]
        ),
        "property_months_of_year": lambda: figures(
            conn, level=Level.PROPERTY, period=Period.MONTH, start=start, end=end
        ),
        "communities_month_district": lambda: figures(
            conn,
            level=Level.COMMUNITY,
            period=Period.MONTH,
            start=month[0],
            end=month[1],
            scope=Scope(districts=(district,)),
        ),
        "communities_month_city": lambda: figures(
            conn, level=Level.COMMUNITY, period=Period.MONTH, start=month[0], end=month[1]
        ),
        "community_days_of_year": lambda: figures(
            conn,
            level=Level.COMMUNITY,
            period=Period.DAY,
            start=start,
            end=end,
            scope=Scope(ids=(one,)),
        ),
        "maintenance_month": lambda: figures(
            conn, level=Level.MAINTENANCE, period=Period.MONTH, start=month[0], end=month[1]
        ),
        "alerts_by_type_month": lambda: alerts_by_type(
            conn, level=Level.PROPERTY, period=Period.MONTH, start=month[0], end=month[1]
        ),
        "credit_month_with_evidence": lambda: evaluate_month(conn, month[0], rules),
        "community_scorecard": lambda: community_scorecard(conn, one, month[0], rules),
    }
    times, cold = {}, {}
    for name, fn in queries.items():
        # cold: nothing materialised (the first reader after a restart or a change);
        # warm: the monthly materialisation in place, as readers after the first find it
        await conn.execute("DELETE FROM sv_month_cache")
        cold[name], _ = await _timed(fn, tries=1)
        times[name], _ = await _timed(fn)
    return {
        "query_ms_max": round(max(times.values()), 1),
        "query_ms_max_cold": round(max(cold.values()), 1),
        "queries": {k: round(v, 1) for k, v in times.items()},
        "queries_cold": {k: round(v, 1) for k, v in cold.items()},
    }


def run(*, quick: bool, db: str | None = None) -> dict[str, Any]:
    """The figures; ``db``: an empty database to use instead of a private server."""
    if db:
        migrate(db)
        return asyncio.run(_main(quick, db))
    with tempfile.TemporaryDirectory(prefix="anju-bench-sv-") as tmp:
        pg = PrivatePostgres(Path(tmp) / "pg").start()
        try:
            url = pg.create_database("supervision")
            migrate(url)
            return asyncio.run(_main(quick, url))
        finally:
            pg.destroy()
