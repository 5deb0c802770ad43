"""The alarm lane's shutdown (issue 11 review): a rule-state snapshot being written when the
lane stops is stored, with the marks of the telemetry it covers (``ingest_evaluated``), not
cancelled half-way (its telemetry would then be evaluated twice after a restart). Real
PostgreSQL and Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from anju.now import now_ms
from anju.registry import CityIndex, load_registry
from anju.servers import PrivateMosquitto
from backend.alarm import AlarmLane
from backend.alerting import Engine
from backend.config import BackendSettings
from backend.db.migrate import migrate
from backend.desk import waited
from backend.ingest import Ingest
from backend.metrics import BackendMetrics
from tests.support import eventually

pytestmark = pytest.mark.integration


async def test_a_snapshot_being_written_at_stop_is_stored_with_its_marks(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    migrate(db_url)
    settings = BackendSettings(database_url=db_url, mqtt_url=broker.url, registry=city_file)
    m = BackendMetrics()
    engine = Engine(CityIndex(load_registry(city_file)), now_ms=now_ms())
    lane = AlarmLane(settings, m, Ingest(db_url, m), engine)
    lane.start()
    await waited(lane.built)
    lane.go()
    await eventually(lambda: lane.connected, 30, "the alarm lane's session")
    async with await psycopg.AsyncConnection.connect(db_url) as blocker:
        # The marks' table locked: the writer's transaction waits in the middle.
        await blocker.execute("LOCK TABLE ingest_evaluated IN EXCLUSIVE MODE")
        stored = lane.desk.states.submit({}, [("gw-shutdown", "boot", 7)])

        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
            for _ in range(600):
                cur = await c.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'anju-alarm-lane'"
                )
                row = await cur.fetchone()
                if row and row[0]:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the state writer never waited for the lock")
        lane.stop()
        # Past the point where the lane stops its tasks: then the database comes back.
        await eventually(lambda: lane._delivery.closing, 30, "the lane stopping")
        await blocker.commit()
    await asyncio.wait_for(waited(lane.finished), 60)
    assert stored.done()
    async with await psycopg.AsyncConnection.connect(db_url) as c:
        cur = await c.execute(
            "SELECT 7::int8 <@ evaluated FROM ingest_evaluated"
            " WHERE gateway_id = 'gw-shutdown' AND boot_id = 'boot' AND lane = 't'"
        )
        assert await cur.fetchone() == (True,)
