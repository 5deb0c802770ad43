"""Rule-evaluation throughput (``anju bench alerts``, part 2): ``Engine.feed`` over a synthetic
mixed stream, on one core, no I/O.

The stream is what a community sends on an ordinary day: every telemetry kind reporting
(elevators moving between floors, opening and closing their doors, detectors' temperatures and
obscuration drifting, pressures and residual currents wandering), and the event-only kinds
sending their routine events (access granted, detector tests). Now and then a value crosses a
threshold, so rules raise and clear alerts as they would in the field.

A *reading* is one metric value (one row of the ``readings`` table) or one event: the unit of
``background_readings_per_s`` in the latency benchmark and of the ingest benchmark.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from typing import Any

from anju.registry import CityIndex
from anju.uplink import Record
from backend.alerting.engine import Engine
from backend.alerting.testing import T0, sample_city

_SERVICE = ("normal",) * 30 + ("inspection",)


def _elevator(rng: random.Random, i: int) -> dict[str, Any]:
    """An elevator's reading: a car cycling through moving, arriving, doors open, closing."""
    phase = i % 8
    moving = phase < 4
    floor = (i // 8) % 17 + 1
    return {
        "moving": moving,
        "direction": "up" if moving and (i // 8) % 2 == 0 else "down" if moving else "none",
        "floor": floor,
        "in_door_zone": not moving,
        "door": "open" if phase in (5, 6) else "closed",
        "passenger": rng.random() < 0.5,
        "service_mode": rng.choice(_SERVICE),
        "speed_mps": round(1.6 + rng.random() * 0.2, 2) if moving else 0.0,
        "up_limit": False,
        "down_limit": False,
        "power": "normal",
        "run_count": 10_000 + i // 8,
        "run_hours": round(1_000 + i / 3600, 3),
    }


def telemetry(
    kind: str, rng: random.Random, i: int, *, quiet: bool = False
) -> dict[str, Any] | None:
    """Reading number ``i`` of a device of ``kind``; ``quiet``: no value ever crosses a
    threshold (background load that raises nothing)."""
    if kind == "elevator":
        return _elevator(rng, i)
    if kind == "smoke_detector":
        return {
            "smoke": False,
            "obscuration_db_m": round(rng.random() * 0.05, 3),
            "temperature_c": round(22 + rng.random(), 2),
            "battery_pct": 87 if quiet or i % 500 else 15 + (i // 500) % 20,
        }
    if kind == "heat_detector":
        return {"temperature_c": round(24 + rng.random() + (i % 120) * 0.01, 2)}
    if kind == "water_pressure":
        dip = 0.2 if not quiet and i % 400 < 90 else 0.0
        return {"pressure_mpa": round(0.25 + rng.random() * 0.05 - dip, 3)}
    if kind == "electrical_fire":
        return {
            "residual_current_ma": round(40 + rng.random() * 30, 1),
            "cable_temp_c": round(35 + rng.random() * 5, 1),
        }
    if kind in ("fire_door", "access_controller"):
        return {"door": "open" if i % 20 == 0 and not quiet else "closed"}
    if kind == "fire_panel":
        return {"pressure_mpa": round(0.3 + rng.random() * 0.02, 3)}
    return None


ROUTINE_EVENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "access_controller": ("access_granted", {}),
    "smoke_detector": ("test", {}),
    "camera": ("fire_lane_clear", {}),
    "perimeter": ("heartbeat", {}),
    "emergency_button": ("heartbeat", {}),
    "manual_call_point": ("heartbeat", {}),
    "fire_panel": ("feedback", {"system_addr": 1, "component_addr": 7}),
}


def records(city: CityIndex, n: int, *, seed: int = 5) -> list[Record]:
    """``n`` records round-robin over the city's devices, one per device per second of device
    time; about one in 20 is a routine event."""
    rng = random.Random(seed)
    devices = sorted(city.devices.values(), key=lambda d: d.id)
    out: list[Record] = []
    seq = 0
    for i in _rounds(n, len(devices)):
        for dev in devices:
            if len(out) == n:
                return out
            seq += 1
            ts = T0 + i * 1000 + seq % 997
            m = telemetry(dev.kind, rng, i)
            ev = ROUTINE_EVENTS.get(dev.kind)
            if m is not None and (ev is None or rng.random() >= 0.05):
                out.append(Record(dev.gateway_id, "b", seq, dev.id, "t", ts, ts + 40, metrics=m))
            elif ev is not None:
                etype, data = ev
                rec = Record(
                    dev.gateway_id, "b", seq, dev.id, "e", ts, ts + 40, event_type=etype, data=data
                )
                out.append(rec)
    return out


def _rounds(n: int, per_round: int) -> Iterator[int]:
    i = 0
    while i * per_round < n + per_round:
        yield i
        i += 1


def readings_in(recs: list[Record]) -> int:
    return sum(len(r.metrics) if r.metrics is not None else 1 for r in recs)


def throughput(*, quick: bool) -> dict[str, float]:
    """Readings per second through ``Engine.feed`` (best of five runs on a fresh engine)."""
    city = sample_city(communities=4 if quick else 20, per_kind=5)
    recs = records(city, 5_000 if quick else 200_000)
    n_readings = readings_in(recs)
    best = float("inf")
    changes = 0
    # As in the backend, which freezes what it built at start: the 200,000 records made up
    # front here would otherwise be walked by every full collection, a cost the backend
    # (whose records come and go) does not pay.
    gc.collect()
    gc.freeze()
    try:
        for _ in range(1 if quick else 5):
            engine = Engine(city)
            changes = 0
            t0 = time.process_time()
            for r in recs:
                changes += len(engine.feed(r, r.rx + 5))
            best = min(best, time.process_time() - t0)
    finally:
        gc.unfreeze()
    return {
        "eval_readings_per_s_per_core": n_readings / best,
        "eval_records_per_s_per_core": len(recs) / best,
        "eval_records": len(recs),
        "eval_alert_changes": changes,
    }
