"""``/readyz`` reflects the alarm lane's own MQTT session too (issue 11, Deliver 1): another
client taking over its identity (``anju-backend-events``) makes the backend not ready until
the lane is connected again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiomqtt
import httpx
import psycopg
import pytest

from anju.servers import PrivateMosquitto
from tests.support import readyz_answers, running_backend

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    # The backend's gc.collect() at start collects garbage left by earlier tests in this
    # process (an unclosed socket of another test, reported here in full runs only); that
    # leak is not this test's subject. Left to find: see the closing note of the second wave.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


async def test_readyz_follows_the_alarm_lanes_session(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    async with running_backend(db_url, broker, city_file) as b:
        base = f"http://127.0.0.1:{b.settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            assert (await http.get("/readyz")).status_code == 200

            async def squat() -> None:
                # The lane's identity, taken again each time the lane takes it back.
                while True:
                    with contextlib.suppress(aiomqtt.MqttError):
                        async with aiomqtt.Client(
                            "127.0.0.1", broker.port, identifier=f"{b.settings.client_id}-events"
                        ) as c:
                            await c.subscribe("nothing/here", qos=1)
                            await asyncio.sleep(30)
                    await asyncio.sleep(0.01)

            squatter = asyncio.create_task(squat(), name="squatter")
            try:
                # (polled often: the lane takes its identity back at once, each time)
                last = await readyz_answers(
                    http, 503, 30, "not ready while the lane is disconnected", poll=0.05
                )
                assert last.json() == {"detail": "broker: the alarm lane is not connected"}
            finally:
                squatter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await squatter
            await readyz_answers(http, 200, 60, "ready again once the lane is back")


async def test_readyz_follows_the_alarm_lanes_database_pool(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    """The alarm lane's own pool (``application_name`` anju-alarm-lane) lost: not ready, with
    the reason, until the pool has connected again."""
    async with running_backend(db_url, broker, city_file) as b:
        base = f"http://127.0.0.1:{b.settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            with psycopg.connect(db_url, autocommit=True) as c:
                killed = c.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'anju-alarm-lane'"
                ).fetchone()
            assert killed is not None and killed[0] >= 1
            last = await http.get("/readyz")
            assert last.status_code == 503
            assert last.json() == {"detail": "database: the alarm lane's pool is not reachable"}
            await readyz_answers(http, 200, 60, "ready again once reconnected")


async def test_readyz_answers_promptly_while_the_database_is_away(
    db_url: str, broker: PrivateMosquitto, city_file: Path
) -> None:
    """No connection to the database can be made (the database refuses every connection and
    the backend's are cut): ``/readyz`` answers 503 with the reason, well within a probe's
    timeout (it used to wait for the pool's 30 s), then 200 once the database is back."""
    dbname = db_url.rsplit("/", 1)[1].split("?")[0]
    admin_url = db_url.replace(f"/{dbname}", "/postgres", 1)

    def allow(yes: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {str(yes).lower()}')
            if not yes:
                c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (dbname,),
                )

    async with running_backend(db_url, broker, city_file) as b:
        base = f"http://127.0.0.1:{b.settings.api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=15) as http:
            assert (await http.get("/readyz")).status_code == 200
            allow(False)
            try:
                for _ in range(3):  # (the first finds cut connections; the next an empty pool)
                    last = await http.get("/readyz")  # a ReadTimeout here is the defect
                    assert last.status_code == 503
                    assert last.json()["detail"].startswith("database:")
            finally:
                allow(True)
            await readyz_answers(http, 200, 60, "ready again once reconnected")
