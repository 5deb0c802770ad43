"""Anchors of the audit chain (issue 10, item 8) on a real PostgreSQL and Mosquitto: a tail cut
off the chain, or its history rewritten consistently, verifies without anchors and is found
against them (CLI, store, API); the head is appended to the anchor file and published retained
on ``anju/audit/head``."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.acl import write_broker_files
from anju.registry import load_registry
from anju.servers import PrivateMosquitto, free_port
from backend.api import AppState, create_app
from backend.audit import Anchor, seal_v2
from backend.audit_anchor import (
    HEAD_TOPIC,
    AnchorFileError,
    AuditAnchor,
    append_anchor,
    mqtt_publisher,
    parse_anchor,
    read_anchors,
)
from backend.config import BackendSettings
from backend.db.migrate import migrate
from backend.metrics import BackendMetrics
from backend.service import Backend
from backend.store import AlertStore
from tests.support import eventually
from tests.test_acl import Client, _clear_and_hash
from tests.test_audit_chain import cli, save_all, story

H = "ab" * 32


def test_anchor_file_appends_reads_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "anchors.jsonl"
    assert read_anchors(path) == []
    a, b = Anchor(3, H, "2026-11-28T00:00:00.000Z"), Anchor(9, "cd" * 32, "2026-11-28T00:01Z")
    append_anchor(path, a)
    append_anchor(path, b)
    assert read_anchors(path) == [a, b]
    with path.open("a") as f:
        f.write('{"n": 10, "hash": "')  # a write cut short: left out
    assert read_anchors(path) == [a, b]
    path.write_text(path.read_text().replace('"n":9', '"n":"nine"') + "\n")
    with pytest.raises(AnchorFileError, match=r"anchors.jsonl:2: not an anchor: n:"):
        read_anchors(path)
    for bad in ("[]", '{"n": 1, "hash": "x", "at": "t"}', '{"n": -1, "hash": "' + H + '"}'):
        with pytest.raises(ValueError):
            parse_anchor(bad)


CUT_TAIL = (
    # The last two entries removed, and the alerts' rows put back as their last remaining
    # entries say: nothing left for the chain itself to notice.
    "DELETE FROM alert_audit WHERE n > 4",
    "UPDATE alerts a SET payload = e.entry -> 'payload', state = e.entry -> 'payload' ->> 'state',"
    " severity = e.entry -> 'payload' ->> 'severity' FROM (SELECT DISTINCT ON (alert_id)"
    " alert_id, entry FROM alert_audit ORDER BY alert_id, n DESC) e WHERE e.alert_id = a.id",
)


async def verify_api(store: AlertStore) -> dict[str, Any]:
    app = create_app(AppState(store, BackendMetrics(), None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://anju") as http:
        r = await http.get("/api/alerts/audit/verify")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


@pytest.mark.integration
async def test_a_cut_tail_is_found_against_the_anchor(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(db_url)
    await save_all(db_url, story())
    path = tmp_path / "anchors.jsonl"
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
        anchor = AuditAnchor(pool, path)
        written = await anchor.once()
        assert written is not None and written.n == 6
        assert await anchor.once() is None  # the head did not move: nothing new
        store = AlertStore(pool, anchor_file=path)
        assert (await store.verify_audit()).ok
        assert cli(db_url, "--anchors", str(path))[0] == 0

        with psycopg.connect(db_url, autocommit=True) as conn:
            for q in CUT_TAIL:
                conn.execute(q)
        # Without the anchor, the shorter chain holds (the defect this fixes).
        assert cli(db_url)[0] == 0
        report = await store.verify_audit()
        assert [(p.n, p.alert_id) for p in report.problems] == [(6, None)], report
        assert "the chain ends at entry 4: its tail was cut" in report.problems[0].reason
        rc, out = cli(db_url, "--anchors", str(path))
        assert rc == 1 and "  entry 6: the anchor of" in out and "tail was cut" in out, out
        doc = await verify_api(store)
        assert (doc["ok"], doc["broken_count"], doc["first_bad"]) == (False, 1, 6)
        assert "tail was cut" in doc["broken"][0]["reason"]

        # The running backend notices at its next period, and anchors the new head.
        with caplog.at_level(logging.CRITICAL, logger="anju.audit"):
            again = await anchor.once()
        assert anchor.alarms == 1 and "no longer holds entry 6" in caplog.text
        assert again is not None and again.n == 4
        assert [a.n for a in read_anchors(path)] == [6, 4]
        assert not (await store.verify_audit()).ok  # the old anchor still says what was lost


@pytest.mark.integration
async def test_history_rewritten_before_an_anchor_is_found(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    await save_all(db_url, story())
    path = tmp_path / "anchors.jsonl"
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
        await AuditAnchor(pool, path).once()
        async with pool.connection() as conn:
            # Who acknowledged, rewritten, and every hash after it recomputed by the rule.
            await conn.execute("UPDATE alert_audit SET actor = 'property' WHERE n = 2")
            await seal_v2(conn, after=1)
        store = AlertStore(pool, anchor_file=path)
        assert (await store.verify_audit(anchors=[])).ok  # consistent in itself
        report = await store.verify_audit()
        assert [p.n for p in report.problems] == [6]
        assert "history before that anchor was rewritten" in report.problems[0].reason


@pytest.mark.integration
async def test_the_head_is_published_retained(
    db_url: str, broker: PrivateMosquitto, tmp_path: Path
) -> None:
    migrate(db_url)
    await save_all(db_url, story())
    async with (
        AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool,
        aiomqtt.Client("127.0.0.1", broker.port) as client,
    ):
        anchor = AuditAnchor(pool, tmp_path / "a.jsonl", mqtt_publisher(lambda: client))
        written = await anchor.once()
        assert written is not None and anchor.published == (6, written.hash)
        # A witness that connects later gets the head at once (retained).
        async with aiomqtt.Client("127.0.0.1", broker.port) as witness:
            await witness.subscribe(HEAD_TOPIC, qos=1)
            msg = await asyncio.wait_for(anext(witness.messages), 10)
        assert msg.retain and isinstance(msg.payload, bytes)
        assert parse_anchor(msg.payload.decode()) == written
        assert read_anchors(tmp_path / "a.jsonl") == [written]


@pytest.mark.integration
async def test_the_anchor_task_follows_the_head(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    changes = story()
    await save_all(db_url, changes[:3])
    path = tmp_path / "anchors.jsonl"
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2) as pool:
        task = asyncio.create_task(AuditAnchor(pool, path, period_s=0.05).run())
        try:
            await eventually(lambda: [a.n for a in read_anchors(path)] == [3], 20, "anchor 3")
            await save_all(db_url, changes[3:])
            # (4 and 5 may be anchored on the way, if a period falls between two saves)
            await eventually(lambda: read_anchors(path)[-1].n == 6, 20, "anchor 6")
            ns = [a.n for a in read_anchors(path)]
            assert ns[0] == 3 and ns == sorted(set(ns)), ns
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.mark.integration
def test_subscribers_may_keep_the_head_as_witnesses(tmp_path: Path, city_file: Path) -> None:
    """The registry's ACLs let a department read the retained ``anju/audit/head``."""
    out = tmp_path / "acl"
    write_broker_files(load_registry(city_file), out)
    users = _clear_and_hash(out / "backend.passwd")
    broker = PrivateMosquitto(
        tmp_path / "b",
        name="secured",
        password_file=out / "backend.passwd",
        acl_file=out / "backend.acl",
    ).start()
    clients: list[Client] = []
    try:
        backend = Client(broker.port, "anju-backend", users["anju-backend"])
        clients.append(backend)
        assert backend.connected.wait(5)
        head = f'{{"n":1,"hash":"{H}","at":"2026-11-28T00:00:00.000Z"}}'.encode()
        backend.c.publish(HEAD_TOPIC, head, qos=1, retain=True).wait_for_publish(5)
        fire = Client(broker.port, "fire.330402", users["fire.330402"])
        clients.append(fire)
        fire.sub(HEAD_TOPIC)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not fire.got:
            time.sleep(0.05)
        assert fire.got[:1] == [HEAD_TOPIC]
    finally:
        for c in clients:
            c.close()
        broker.stop()


@pytest.mark.integration
async def test_the_backend_anchors_its_chain_and_verifies_against_it(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    """``ANJU_AUDIT_ANCHOR_FILE`` wired in the service: at start the head is anchored in the
    file and retained on the broker, and the API verifies against the file."""
    migrate(db_url)
    await save_all(db_url, story())
    path = tmp_path / "anchors" / "audit.jsonl"
    port = free_port()
    settings = BackendSettings(
        database_url=db_url,
        mqtt_url=broker.url,
        registry=city_file,
        api_port=port,
        audit_anchor_file=path,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(Backend(settings).run(stop), name="backend-under-test")
    try:
        await eventually(lambda: path.exists() and bool(read_anchors(path)), 30, "an anchor")
        [anchor] = read_anchors(path)
        assert anchor.n == 6
        async with aiomqtt.Client("127.0.0.1", broker.port) as witness:
            await witness.subscribe(HEAD_TOPIC, qos=1)
            msg = await asyncio.wait_for(anext(witness.messages), 10)
        assert isinstance(msg.payload, bytes) and parse_anchor(msg.payload.decode()) == anchor
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(100):  # the API may still be starting
                try:
                    v = (await http.get("/api/alerts/audit/verify")).json()
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the backend's API did not answer within 10 s")
        assert (v["ok"], v["entries"], v["anchors"], v["broken"]) == (True, 6, 1, []), v
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
