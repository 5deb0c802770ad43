"""The latency benchmark's city and its background load (``anju bench alerts``, part 1).

The city: ``communities`` communities of ``per_kind`` devices of every kind (the rule scenario
city of ``testing``), plus smoke detectors that only the probes use, each in a building of its
own (so that one probe never confirms another's fire) and spread over the communities (so that
no community sees more than a few probes a minute: no storm summary).

The background: simulated gateways in a process of their own publishing uplink batches as real
gateways do (``anju.uplink``), paced to a number of readings per second, of quiet telemetry
from every device in the registry (the rules evaluate all of it; none of it raises).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

from anju.now import now_ms
from anju.registry import CityIndex, parse_registry
from anju.uplink import encode_batch, record_body, up_topic
from backend.alerting.testing import city_doc
from benches.alerts_eval import telemetry

RECS_PER_BATCH = 50


def probe_id(community: int, n: int) -> str:
    return f"c{community}-probe-{n}"


def bench_city(communities: int, per_kind: int, probes_per_community: int) -> dict[str, Any]:
    doc = city_doc(communities, per_kind)
    for c, com in enumerate(doc["communities"]):
        for n in range(probes_per_community):
            com["devices"].append(
                {
                    "id": probe_id(c, n),
                    "kind": "smoke_detector",
                    "gateway": f"gw-c{c}",
                    "building": f"p{n}",
                    "location": f"probe building {n}",
                }
            )
    return doc


def _telemetry_devices(city: CityIndex) -> dict[str, list[tuple[str, str]]]:
    """(device, kind) of every background device that sends telemetry, by gateway."""
    out: dict[str, list[tuple[str, str]]] = {}
    rng = random.Random(0)
    for dev in sorted(city.devices.values(), key=lambda d: d.id):
        if "-probe-" in dev.id or telemetry(dev.kind, rng, 0) is None:
            continue
        out.setdefault(dev.gateway_id, []).append((dev.id, dev.kind))
    return out


def _batches(doc: dict[str, Any], seed: int) -> Iterator[tuple[str, list[tuple[str, str]], int]]:
    """Forever: (gateway, its devices, round) in round-robin over the gateways."""
    by_gw = _telemetry_devices(CityIndex(parse_registry(doc)))
    gws = sorted(by_gw)
    rnd = 0
    while True:
        for gw in gws:
            yield gw, by_gw[gw], rnd
        rnd += 1


def background(
    port: int, doc: dict[str, Any], readings_per_s: float, duration_s: float, sent: Any
) -> None:
    """Process target: publish quiet telemetry at ``readings_per_s`` for ``duration_s``
    (QoS 1, like a gateway); ``sent`` (a shared value) counts the readings published."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bg-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    rng = random.Random(1)
    boot = uuid.uuid4().hex
    seqs: dict[str, int] = {}
    offsets: dict[str, int] = {}  # next device of each gateway
    start = time.monotonic()
    readings = 0
    for gw, devices, _rnd in _batches(doc, 1):
        elapsed = time.monotonic() - start
        if elapsed >= duration_s:
            break
        ahead = readings / readings_per_s - elapsed
        if ahead > 0:
            time.sleep(ahead)
        now = now_ms()
        rows = []
        for _ in range(RECS_PER_BATCH):
            k = offsets.get(gw, 0)
            offsets[gw] = k + 1
            dev_id, kind = devices[k % len(devices)]
            m = telemetry(kind, rng, k // len(devices), quiet=True)
            assert m is not None
            seq = seqs[gw] = seqs.get(gw, 0) + 1
            body = record_body(
                device_id=dev_id, kind="t", ts=now, rx=now, gateway_timed=False, payload={"m": m}
            )
            rows.append((seq, boot, body))
            readings += len(m)
        c.publish(up_topic(gw), encode_batch(gw, rows), qos=1)
        with sent.get_lock():
            sent.value = readings
    c.loop_stop()
    c.disconnect()
