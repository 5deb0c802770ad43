"""``anju bench storm``: the replay storm (issue 16). N gateways come back at once, each with a
backlog of M readings; fire alarms are raised while the backend works through the replay.

Measured from the outside, as the chaos verdict: ``drain_s`` is from the moment every gateway
sends its backlog to the moment the last record is acknowledged; ``ingest_readings_per_s`` is
the backlog over that time; alarm latency is from the device's event time to the receipt on the
fire brigade's subscription; ``lost`` and ``duplicates`` are counted in PostgreSQL by device
sequence.

The gateways are the harness's simulated ones (``anju.chaos.city.SimGateway``: the uplink
protocol of anju/uplink.py, batches of 500 records, one paho connection each), so that the
figures are the backend's, not those of N gateway processes sharing two cores. The city is
provisioned as ``anju demo``'s (passwords, ACLs, TLS on the uplink broker).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from anju import acl
from anju.chaos import verdict as v
from anju.chaos.city import Departments, Plan, attach, build
from anju.now import now_ms


def run(*, quick: bool, gateways: int | None = None, backlog: int | None = None) -> dict[str, Any]:
    n = gateways or (4 if quick else 40)
    m = backlog or (200 if quick else 5000)
    with tempfile.TemporaryDirectory(prefix="anju-storm-") as tmp:
        return _run(n, m, Path(tmp), alarm_every_s=0.1 if quick else 0.05)


def _run(n: int, m: int, data: Path, alarm_every_s: float) -> dict[str, Any]:
    city = build(Plan(communities=n, real_gateways=0, workers=1, seed=16, data=data))
    depts: Departments | None = None
    try:
        attach(city)
        for s in city.sims.values():
            s.batch = 500
        fire = {("fire", city.city.devices[p].district) for p in city.panels}
        logins = {a: city.login("backend", acl.subscriber_user(*a)) for a in fire}
        depts = Departments(city.uplink.port, fire, logins)
        depts.wait_ready(15)
        deadline = time.monotonic() + 30
        while not all(s.c.is_connected() for s in city.sims.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the simulated gateways did not connect")
            time.sleep(0.1)
        # The outage: every gateway's backlog builds up (nothing is sent).
        for s in city.sims.values():
            reader = next(d for d in s.devices if d in city.readers)
            for _ in range(m):
                s.reading(reader)
        stop = threading.Event()
        alarms: list[tuple[str, int]] = []
        panels = sorted(city.panels)
        fired: dict[str, int] = dict.fromkeys(panels, 0)

        def raise_alarms() -> None:
            i = 0
            while not stop.wait(alarm_every_s):
                dev = panels[i % len(panels)]
                i += 1
                if fired[dev] >= 4:  # under the flapping limit (5 in 10 min)
                    continue
                fired[dev] += 1
                sim = city.sims[city.panels[dev]]
                ts = now_ms()
                sim.event(dev, "fire", ts, {"system_addr": 1, "component_addr": i})
                alarms.append((dev, ts))
                stop.wait(0.02)
                sim.event(dev, "reset", now_ms(), {})

        t0 = time.monotonic()
        for s in city.sims.values():  # all back at once
            s.pump(resend_after=60)
        alarm_thread = threading.Thread(target=raise_alarms, daemon=True, name="storm-alarms")
        alarm_thread.start()
        limit = time.monotonic() + max(120.0, n * m / 500)
        while any(s.backlog() for s in city.sims.values()):
            if time.monotonic() > limit:
                break
            for s in city.sims.values():
                s.pump(resend_after=60)
            time.sleep(0.05)
        drain_s = time.monotonic() - t0
        stop.set()
        alarm_thread.join(5)
        time.sleep(3.0)  # the last alarms and any duplicate land
        stored = city.stored()
        received = list(depts.got)
    finally:
        if depts is not None:
            depts.close()
        for s in city.sims.values():
            s.close()
        city.children.stop(city.backend_names(), timeout=10)
        city.uplink.stop()
        city.pg.stop()
        city.children.close()
    acked = [k for k in city.acked() if k[0] in city.readers]
    st = v.readings_stored_once(acked, stored)
    # Alarm latency: the first receipt of each alarm's raise by its fire brigade.
    first: dict[tuple[str, int], int] = {}
    for r in received:
        p = r.payload
        if p.get("type") != "fire.alarm" or p.get("state") != "raised":
            continue
        ms = v.occurred_ms(p)
        if ms is not None:
            k = (str(p.get("device_id")), ms)
            first[k] = min(first.get(k, r.recv_ms), r.recv_ms)
    during = [(d, ts) for d, ts in alarms if ts <= now_ms()]
    lat = [float(first[k] - k[1]) for k in during if k in first]
    missing = len(during) - len(lat)
    return {
        "gateways": n,
        "backlog_readings": n * m,
        "drain_s": round(drain_s, 3),
        "ingest_readings_per_s": round(n * m / drain_s, 1) if drain_s > 0 else 0.0,
        "alarms": len(during),
        "alarms_not_received": missing,
        "alarm_p50_ms": round(v.percentile(lat, 0.5), 1),
        "alarm_p99_ms": round(v.percentile(lat, 0.99), 1),
        "alarm_max_ms": round(max(lat), 1) if lat else float("nan"),
        "lost": len(st.lost),
        "duplicates": len(st.duplicates),
    }
