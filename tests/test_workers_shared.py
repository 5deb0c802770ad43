"""Several ACTIVE backend workers (issue 11, Deliver 2; docs/scaling.md, "Several active
workers") on a real Mosquitto and PostgreSQL: three ``anju backend run --group G --shared``
processes, each with its own client id, behind the broker's shared subscription (Mosquitto:
round robin), the city's communities in 16 partitions, each evaluated by the worker holding
its advisory lock.

A city-sized registry (the tests' two communities and 60 generated ones, about 7,700
devices); a gateway-like load (resending what is not confirmed) on one community and an
elevator and a smoke detector on another; the worker that owns the elevator's partition is
SIGKILLed while the car's trapped timer runs on it, then started again; another worker is
stopped cleanly.
Every confirmed reading is stored once (whichever worker received it), the trapped passenger
is raised once and on time by the worker that took the partition over, a fire alarm sent
right after the kill reaches the fire brigade within 10 s, each alert is raised and delivered
once (not once per worker), and a person acknowledges the fire alarm through a worker that
does not own it (the request is answered by the owner)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from anju.servers import PrivateMosquitto, free_port
from backend.partitions import partition_of
from device_simulators.registrygen import CityPlan, generate_registry
from tests.support import Subscriber, eventually
from tests.test_ingest_support import SimOutbox
from tests.test_workers import ELEV, GW, LOAD_GW, SMOKE, Gateway, count, gateways_sending

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]
GROUP = "anju-shared"
PARTITIONS = 16
NH = "jx-nh-0001"  # the elevator's and the smoke detector's community
TAKES = re.compile(rb"worker (\d+) takes partition (\d+) of group")


class Worker:
    def __init__(self, n: int, db_url: str, broker: PrivateMosquitto, city: Path, logs: Path):
        self.port = free_port()
        self.args = [
            sys.executable, "-m", "anju", "backend", "run", "--db", db_url, "--mqtt", broker.url,
            "--registry", str(city), "--api-port", str(self.port), "--group", GROUP,
            "--shared", "--partitions", str(PARTITIONS), "--client-id", f"anju-backend-{n}",
        ]  # fmt: skip
        self.log = logs / f"worker-{n}.log"
        self.proc = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        return self.proc

    def owned(self) -> set[int]:
        """The partitions this process (its current pid) took, from its log."""
        pid = str(self.proc.pid).encode()
        text = self.log.read_bytes() if self.log.exists() else b""
        return {int(p) for w, p in TAKES.findall(text) if w == pid}

    def alive(self) -> bool:
        return self.proc.poll() is None


def owner(workers: list[Worker], partition: int) -> Worker | None:
    found = [w for w in workers if w.alive() and partition in w.owned()]
    return found[0] if len(found) == 1 else None


def city_sized(small: Path, out: Path, communities: int = 60) -> Path:
    """The tests' small city with a generated one around it (about 7,600 devices more): each
    worker adopts a few thousand devices' states when it takes its partitions."""
    doc = yaml.safe_load(small.read_text(encoding="utf-8"))
    big = generate_registry(CityPlan(communities=communities, seed=11))
    for key in ("districts", "organisations"):
        known = {x.get("code", x.get("id")) for x in doc[key]}
        doc[key] += [x for x in big[key] if x.get("code", x.get("id")) not in known]
    mine = {c["id"] for c in doc["communities"]}
    doc["communities"] += [c for c in big["communities"] if c["id"] not in mine]
    out.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return out


async def test_three_active_workers_kill_restart_and_clean_stop(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    city = city_sized(city_file, tmp_path / "city.yaml")
    workers = [Worker(n, db_url, broker, city, tmp_path) for n in (1, 2, 3)]
    fire = Subscriber(broker.port, "anju/alerts/fire/330402/#")
    market = Subscriber(broker.port, "anju/alerts/market_supervision/330402/#")
    subs = [asyncio.create_task(s.run(), name=f"sub-{i}") for i, s in enumerate((fire, market))]
    background: list[asyncio.Task[None]] = []
    box = SimOutbox(LOAD_GW, 4000, devices=4, metrics=5, event_every=20, step_ms=50)
    load_confirmed: set[int] = set()
    nh = partition_of(NH, PARTITIONS)
    try:
        for s in (fire, market):
            await asyncio.wait_for(s.ready.wait(), 10)

        def all_taken() -> bool:
            mine = [w.owned() for w in workers if w.alive()]
            return sum(len(m) for m in mine) == PARTITIONS and set().union(*mine) == set(
                range(PARTITIONS)
            )

        await eventually(all_taken, 60, "every partition taken once", poll=0.2)
        # Started together, the three share the partitions.
        assert all(len(w.owned()) >= 4 for w in workers), [sorted(w.owned()) for w in workers]
        first = owner(workers, nh)
        assert first is not None
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sim-gws") as client:
            gw = Gateway(client, GW)
            background += await gateways_sending(
                client, gw, box, load_confirmed, resend_every_s=2.0
            )
            # The car has been stuck for 12 of its 30 s (device time) when its owner dies.
            stuck = {"moving": False, "door": "closed", "passenger": True, "in_door_zone": False}
            t0 = int(time.time() * 1000) - 12_000
            trapped = await gw.send(ELEV, "t", t0, {"m": stuck})
            await eventually(lambda: trapped in gw.confirmed, 30, "the stuck car confirmed")

            async def car() -> None:
                # The car reports every second, as a real one does: round robin spreads its
                # readings over every worker, and only the owner of its partition may run
                # its timer (each worker timing it would raise it once each).
                while not market.got:
                    await gw.send(ELEV, "t", int(time.time() * 1000), {"m": stuck})
                    await asyncio.sleep(1.0)

            background.append(asyncio.create_task(car(), name="car"))
            await eventually(lambda: len(load_confirmed) >= 500, 60, "some load confirmed")

            first.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.proc.wait, 10)
            sent = time.monotonic()
            # The detector reports its alarm three times (a second and third report): round
            # robin gives them to different workers; one alert, raised once, by the owner.
            for _ in range(3):
                await gw.send(SMOKE, "e", int(time.time() * 1000), {"e": "alarm", "x": {}})
                await asyncio.sleep(0.2)
            await eventually(
                lambda: any(p["type"] == "fire.alarm" for _, p in fire.got),
                10,
                "the fire alarm during the takeover",
            )
            took = time.monotonic() - sent
            print(f"fire alarm during the takeover: {took:.2f} s")
            await eventually(lambda: owner(workers, nh) is not None, 10, "the partition taken")
            second = owner(workers, nh)
            assert second is not None and second is not first
            first.start()  # it comes back: it receives and stores, and owns what is free

            await eventually(lambda: bool(market.got), 60, "the trapped alert")
            # A person acknowledges the fire alarm through a worker that does not own it.
            [alarm] = [p for _, p in fire.got if p["type"] == "fire.alarm"]
            other = next(w for w in workers if w is not second and w.alive())
            await eventually(lambda: _serves(other), 60, "the other worker's API")
            async with httpx.AsyncClient(timeout=10) as http:
                r = await http.post(
                    f"http://127.0.0.1:{other.port}/api/alerts/{alarm['id']}/ack",
                    json={"audience": "fire", "by": "duty officer"},
                )
            assert r.status_code == 200, r.text
            assert any(a["audience"] == "fire" for a in r.json()["acks"]), r.json()

            second.proc.send_signal(signal.SIGTERM)  # a clean stop: its partitions handed on
            assert await asyncio.to_thread(second.proc.wait, 90) == 0
            await eventually(lambda: owner(workers, nh) is not None, 20, "taken again")
            await eventually(lambda: not box.unacked, 120, "every reading confirmed")
            await eventually(lambda: len(gw.confirmed) == len(gw.bodies), 30, "all confirmed")
            await asyncio.sleep(1.0)  # any second delivery would have come by now
    finally:
        for t in background + subs:
            t.cancel()
        await asyncio.gather(*background, *subs, return_exceptions=True)
        for w in workers:
            if w.alive():
                w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                await asyncio.to_thread(w.proc.wait, 60)
            except subprocess.TimeoutExpired:
                w.proc.kill()

    for w in workers:
        text = w.log.read_text(errors="replace")
        assert "Traceback" not in text, text[-3000:]
        # One evaluator per device: no worker ever raised what another had open (the
        # database's one-open-alert index would refuse it, and the worker log it).
        assert "conflicts with an open alert" not in text, text[-3000:]
    # Every confirmed reading stored once, whichever worker received it.
    assert load_confirmed == set(box.bodies)
    devices = [f"{LOAD_GW}-dev-{i}" for i in range(4)]
    readings = count(db_url, "SELECT count(*) FROM readings WHERE device_id = ANY(%s)", devices)
    events = count(db_url, "SELECT count(*) FROM events WHERE device_id = ANY(%s)", devices)
    assert (readings, events) == (box.expected_readings(), box.expected_events())
    # Everything handed over was evaluated (and its row deleted with its rule state).
    assert count(db_url, "SELECT count(*) FROM rules_handoff") == 0
    # The trapped passenger: raised once, on time across the kill.
    [(_, a)] = market.got
    assert a["type"] == "elevator.trapped" and a["state"] == "raised"
    assert 30.0 <= a["evidence"]["stopped_s"] < 32.0, a["evidence"]
    # The fire alarm: raised once, delivered once to the brigade, within 10 s of its sending.
    raised = [p for _, p in fire.got if p["type"] == "fire.alarm" and p["state"] == "raised"]
    assert len(raised) == 1, json.dumps(fire.got)[:2000]
    assert took < 10
    for t in ("fire.alarm", "elevator.trapped"):
        assert count(db_url, "SELECT count(*) FROM alerts WHERE type = %s", t) == 1


def _serves(w: Worker) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{w.port}/healthz", timeout=1).is_success
    except httpx.HTTPError:
        return False
