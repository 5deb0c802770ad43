"""``anju bench simulate``: how many simulated devices and readings a second one process drives.

A generated Jiaxing city of about ``devices`` devices (every kind), one MQTT client per gateway,
publishing to a private Mosquitto on loopback in real time (time scale 1), every device
reporting every 10 s (elevators too, and every second while a car moves). Figures:

- ``devices``: devices simulated;
- ``readings_per_s``: readings (telemetry and events) handed to MQTT per second of the run
  (the retained statuses sent at connection are counted in ``sent`` only);
- ``cpu_cores_used``: this process's CPU seconds (all threads, paho's network threads included)
  per wall second; under 1.0 means one core keeps up;
- ``expected_per_s``: what the devices should send at their rates (about devices / 10);
- ``sent``, ``dropped``: totals by channel.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from anju.registry import parse_registry
from anju.servers import PrivateMosquitto
from device_simulators.base import Behaviour
from device_simulators.fleet import Timing
from device_simulators.registrygen import CityPlan, generate_registry
from device_simulators.runner import run_simulation

DEVICES_PER_COMMUNITY = 128  # about, with CityPlan's defaults


def run(*, quick: bool) -> dict[str, Any]:
    target = 2_000 if quick else 50_000
    duration_s = 4.0 if quick else 60.0
    communities = max(1, math.ceil(target / DEVICES_PER_COMMUNITY))
    registry = parse_registry(generate_registry(CityPlan(communities=communities, seed=7)))
    with tempfile.TemporaryDirectory(prefix="anju-bench-sim-") as tmp:
        broker = PrivateMosquitto(Path(tmp) / "mqtt", name="bench broker").start()
        try:
            lan = {gw.id: broker.url for c in registry.communities for gw in c.gateways}
            cpu0, wall0 = time.process_time(), time.monotonic()
            summary = run_simulation(
                registry,
                lan,
                duration_s=duration_s,
                time_scale=1.0,
                stop=threading.Event(),
                timing=Timing(elevator_moving_s=1.0, elevator_idle_s=10.0, other_s=10.0),
                behaviour=Behaviour(),
                progress_every_s=1e9,
            )
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        finally:
            broker.stop()
    readings = summary.sent["telemetry"] + summary.sent["event"]
    return {
        "devices": summary.devices,
        "readings_per_s": round(readings / max(summary.sim_s, 1e-9), 1),
        "cpu_cores_used": round(cpu / wall, 3),
        "expected_per_s": round(summary.devices / 10.0, 1),
        "gateways": summary.gateways,
        "wall_s": round(wall, 1),
        "sent": dict(summary.sent),
        "dropped": dict(summary.dropped),
    }
