"""Webhooks on a real backend, broker and database, to real HTTP receivers on 127.0.0.1: the
signature verifies with the department's secret, a failing receiver is retried then
dead-lettered, the dead-letter list shows it, and a replay delivers it."""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from anju.servers import PrivateMosquitto, free_port
from tests.support import eventually
from tests.test_alert_e2e import SMOKE, Uplink, alerting_file, backend_running, now_ms

pytestmark = pytest.mark.integration

FIRE_SECRET = "fire-brigade-330402-secret"
PROP_SECRET = "greentown-control-room-key"


class Receiver:
    """A department's or company's HTTP endpoint: keeps every request; answers 500 to the
    first ``fail`` of them, 204 to the rest."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = 500 if len(receiver.requests) < receiver.fail else 204
                    receiver.requests.append((dict(self.headers.items()), body, status))
                    receiver.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/anju-alerts"

    def got(self) -> list[tuple[dict[str, str], bytes, int]]:
        with self.lock:
            return list(self.requests)


@contextmanager
def receiving(*receivers: Receiver) -> Iterator[None]:
    threads = [
        threading.Thread(target=r.server.serve_forever, name=f"receiver-{i}", daemon=True)
        for i, r in enumerate(receivers)
    ]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for r in receivers:
            r.server.shutdown()
            r.server.server_close()
        for t in threads:
            t.join(5)


async def until(
    get: Callable[[], Awaitable[list[dict[str, Any]]]], within: float = 20.0, what: str = ""
) -> list[dict[str, Any]]:
    """``get()`` once it returns something (polled), else fail."""
    deadline = time.monotonic() + within
    while not (got := await get()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return got


def progress(db_url: str, webhook: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT done_upto FROM webhook_progress WHERE name = %s", (webhook,)
        ).fetchone()
    return int(row[0]) if row else -1


def expected_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What a receiver computes (independently of the backend's code)."""
    return (
        "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, "sha256").hexdigest()
    )


async def test_signed_delivery_retries_dead_letters_and_replay(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    fire = Receiver()
    prop = Receiver(fail=3)  # down for the three attempts of the first delivery
    hooks = [
        {"name": "fire-nh", "audience": "fire", "scope": "330402", "url": fire.url,
         "secret": FIRE_SECRET, "max_attempts": 3},
        {"name": "greentown", "audience": "property", "scope": "org-greentown-jx",
         "url": prop.url, "secret": PROP_SECRET, "max_attempts": 3},
        # Another district's brigade: must receive nothing of a Nanhu fire.
        {"name": "fire-xz", "audience": "fire", "scope": "330411", "url": fire.url + "/xz",
         "secret": FIRE_SECRET},
    ]  # fmt: skip
    alerting = alerting_file(tmp_path, webhooks=hooks)
    port = free_port()
    with receiving(fire, prop):
        async with (
            backend_running(db_url, broker, city_file, alerting, port),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
        ):
            root = {"Authorization": "Bearer tok-root"}
            t = now_ms()
            await Uplink(broker.port).send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})

            # The fire brigade's system: one POST, signed with its secret.
            await eventually(lambda: bool(fire.got()), what="the fire brigade's webhook")
            [(headers, body, status)] = fire.got()
            assert status == 204
            ts = headers["X-Anju-Timestamp"]
            assert headers["X-Anju-Signature"] == expected_signature(FIRE_SECRET, ts, body)
            assert headers["X-Anju-Signature"] != expected_signature(PROP_SECRET, ts, body)
            assert headers["Content-Type"] == "application/json"
            alert = json.loads(body)
            assert (alert["type"], alert["state"], alert["device_id"]) == (
                "fire.alarm",
                "raised",
                SMOKE,
            )
            assert {"audience": "fire", "scope": "330402"} in alert["audiences"]
            delivery = headers["X-Anju-Delivery"]
            assert delivery.isdigit()

            # The property company's system is down: three attempts, then a dead letter.
            async def dead() -> list[dict[str, Any]]:
                r = await http.get("/api/webhooks/dead-letters", headers=root)
                assert r.status_code == 200
                out: list[dict[str, Any]] = r.json()
                return out

            letters = await until(dead, what="the dead letter")
            assert [
                (d["webhook"], d["attempts"], d["error"], d["payload"]["id"]) for d in letters
            ] == [("greentown", 3, "HTTP 500", alert["id"])]
            attempts = prop.got()
            assert [s for _, _, s in attempts] == [500, 500, 500]
            assert {h["X-Anju-Delivery"] for h, _, _ in attempts} == {delivery}
            for h, b, _ in attempts:  # each attempt signed afresh, with the company's secret
                assert h["X-Anju-Signature"] == expected_signature(
                    PROP_SECRET, h["X-Anju-Timestamp"], b
                )

            # Only admin sees and replays dead letters.
            fire_tok = {"Authorization": "Bearer tok-fire-nh"}
            assert (
                await http.get("/api/webhooks/dead-letters", headers=fire_tok)
            ).status_code == 403
            r = await http.post("/api/webhooks/dead-letters/replay", headers=fire_tok, json={})
            assert r.status_code == 403

            # Replay: the receiver is back; the change is delivered and the letter closed.
            r = await http.post(
                "/api/webhooks/dead-letters/replay", headers=root, json={"ids": [letters[0]["id"]]}
            )
            assert r.json() == {"replayed": 1}
            await eventually(lambda: len(prop.got()) == 4, what="the replayed delivery")
            h, b, status = prop.got()[3]
            assert status == 204 and json.loads(b)["id"] == alert["id"]
            assert h["X-Anju-Delivery"] == delivery
            assert h["X-Anju-Signature"] == expected_signature(
                PROP_SECRET, h["X-Anju-Timestamp"], b
            )
            assert await dead() == []
            r = await http.get("/api/webhooks/dead-letters?pending_only=false", headers=root)
            [closed] = r.json()
            assert closed["replayed_at"] is not None
            # Nothing for the other district's brigade, nothing twice for Nanhu's.
            assert [json.loads(b)["id"] for _, b, _ in fire.got()] == [alert["id"]]
            assert fire.paths == ["/anju-alerts"]


async def test_a_delivery_in_hand_at_a_restart_is_made_after_it(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    """The fire brigade's system is down; the backend stops while it retries; once the
    system is back, the restarted backend delivers the change (and only that one, once). A
    webhook configured after the alarm does not get the history."""
    fire = Receiver(fail=10_000)
    hook = {"name": "fire-nh", "audience": "fire", "scope": "330402", "url": fire.url,
            "secret": FIRE_SECRET, "max_attempts": 50}  # fmt: skip
    late = Receiver()
    late_hook = {**hook, "name": "fire-nh-new", "url": late.url}
    with receiving(fire, late):
        alerting = alerting_file(tmp_path, webhooks=[hook])
        async with backend_running(db_url, broker, city_file, alerting, free_port()):
            t = now_ms()
            await Uplink(broker.port).send(SMOKE, "e", t, t, {"e": "alarm", "x": {}})
            await eventually(lambda: bool(fire.got()), what="a first, failed attempt")
        assert {s for _, _, s in fire.got()} == {500}
        delivery = fire.got()[0][0]["X-Anju-Delivery"]
        fire.fail = 0  # the brigade's system is back

        alerting = alerting_file(tmp_path, webhooks=[hook, late_hook])
        async with backend_running(db_url, broker, city_file, alerting, free_port()):
            await eventually(lambda: fire.got()[-1][2] == 204, what="the delivery after restart")
            await eventually(
                lambda: progress(db_url, "fire-nh") >= int(delivery), what="its progress stored"
            )
        h, body, _ = fire.got()[-1]
        assert h["X-Anju-Delivery"] == delivery
        assert json.loads(body)["device_id"] == SMOKE
        assert late.got() == []  # configured after the alarm: no history

        before = len(fire.got())
        async with backend_running(db_url, broker, city_file, alerting, free_port()):
            await asyncio.sleep(1.5)
        assert len(fire.got()) == before  # done: not delivered again
