"""Run simulated devices against the communities' LAN brokers, in real or compressed time.

One paho client per gateway carries the messages of all that gateway's devices (the real
devices each have their own connection; for a city of tens of thousands of devices on one
machine a client per gateway is what fits, and the broker sees the same topics and payloads).
Devices are kept in a heap by the time they next have something to do, so a tick only touches
the devices that are due: a city of 50,000 devices reporting every 10 s costs about 5,000
steps a second, not 50,000.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from anju.contract import device_topic
from anju.now import now_ms as wall_now_ms
from anju.registry import Registry
from device_simulators.base import Behaviour, DeviceModel, SimulatorError
from device_simulators.fleet import Fleet, Timing, build_fleet
from device_simulators.mqttlink import GatewayLink
from device_simulators.scenario import Scenario, ScenarioAction

PROGRESS_EVERY_S = 10.0
"""Real seconds between progress lines."""


@dataclass(frozen=True, slots=True)
class SimSummary:
    """What a simulation did."""

    devices: int
    """Devices simulated."""
    gateways: int
    skipped: int
    """Devices of the simulated gateways left out because their kind has no model."""
    sent: Mapping[str, int]
    """Messages handed to the MQTT client, by channel (telemetry, event, status)."""
    dropped: Mapping[str, int]
    """Messages dropped, by channel: telemetry while disconnected, anything beyond the queue."""
    actions: int
    """Scenario actions applied."""
    sim_s: float
    """Device seconds simulated."""
    wall_s: float = 0.0
    """Real seconds the simulation ran."""
    events: Mapping[str, int] | None = None
    """Events sent, by event type."""

    def describe(self) -> str:
        """A few lines for a person."""
        sent = sum(self.sent.values())
        rate = sent / self.wall_s if self.wall_s > 0 else 0.0
        events = ", ".join(f"{n} {t}" for t, n in sorted((self.events or {}).items()))
        return (
            f"simulated {self.devices} devices on {self.gateways} gateways for "
            f"{self.sim_s:.0f} device seconds in {self.wall_s:.1f} s\n"
            f"sent {sent} messages ({rate:,.0f}/s): {self.sent.get('telemetry', 0)} telemetry, "
            f"{self.sent.get('event', 0)} events, {self.sent.get('status', 0)} status; "
            f"dropped {sum(self.dropped.values())}; scenario actions {self.actions}; "
            f"skipped devices {self.skipped}\n"
            f"events: {events or 'none'}"
        )


def _fmt_params(action: ScenarioAction) -> str:
    if not action.params:
        return ""
    inner = ", ".join(f"{k}={v}" for k, v in action.params.items())
    return f" ({inner})"


class _Schedule:
    """Devices by the time they are next due (a heap with lazy removal of stale entries)."""

    def __init__(self, models: Mapping[str, DeviceModel]) -> None:
        self.ids = list(models)
        self.models = [models[i] for i in self.ids]
        self.due = [m.due_ms() for m in self.models]
        self.heap = [(d, i) for i, d in enumerate(self.due)]
        heapq.heapify(self.heap)
        self.index = {dev: i for i, dev in enumerate(self.ids)}

    def pop_due(self, now_ms: int) -> list[int]:
        out: list[int] = []
        heap = self.heap
        while heap and heap[0][0] <= now_ms:
            due, i = heapq.heappop(heap)
            if due == self.due[i]:
                out.append(i)
        return out

    def reschedule(self, i: int) -> None:
        due = self.models[i].due_ms()
        if self.models[i].pending:
            due = min(due, self.models[i].now_ms)
        self.due[i] = due
        heapq.heappush(self.heap, (due, i))


def run_simulation(
    registry: Registry,
    lan: Mapping[str, str],
    *,
    scenario: Scenario | None = None,
    duration_s: float | None = None,
    seed: int = 1,
    time_scale: float = 1.0,
    stop: threading.Event | None = None,
    log: Callable[[str], None] | None = None,
    tick_s: float = 0.2,
    start_ms: int | None = None,
    timing: Timing | None = None,
    behaviour: Behaviour | None = None,
    progress_every_s: float = PROGRESS_EVERY_S,
) -> SimSummary:
    """Simulate the devices of the gateways in ``lan`` (gateway id -> ``mqtt://host:port``).

    Device time is ``start_ms + elapsed * time_scale`` (``start_ms`` defaults to the wall clock
    now). ``duration_s`` and the scenario's ``at`` times are device seconds; without
    ``duration_s`` the simulation runs until ``stop`` is set (a scenario's own ``duration_s``
    is advice for the caller: pass it on to stop when the scenario is over). Connection
    failures are retried in the background and never raise; messages that cannot be sent are
    counted in ``SimSummary.dropped``. Gateway actions of a scenario (uplink cuts) are not the
    simulator's to play here: they are logged and skipped.
    """
    if time_scale <= 0 or tick_s <= 0:
        raise ValueError(f"time_scale and tick_s must be positive ({time_scale}, {tick_s})")
    say: Callable[[str], None] = log or (lambda _line: None)
    halt = stop or threading.Event()
    wall0 = time.monotonic()
    t_start_ms = wall_now_ms() if start_ms is None else start_ms

    known = {gw.id for c in registry.communities for gw in c.gateways}
    for gw_id in sorted(set(lan) - known):
        say(f"gateway {gw_id} is not in the registry; nothing to simulate there")
    fleet = build_fleet(
        registry,
        seed=seed,
        start_ms=t_start_ms,
        gateways=set(lan),
        timing=timing,
        behaviour=behaviour,
    )
    _log_skipped(fleet, say)
    timeline = scenario.timeline() if scenario is not None else []
    for act in timeline:
        if act.gateway is not None:
            say(
                f"scenario: {act.gateway} {act.action} at t={act.at:g}s needs the in-process "
                "harness or a real gateway; skipped"
            )
        elif act.device not in fleet.models:
            say(
                f"scenario: {act.device} is not simulated here; its {act.action} at "
                f"t={act.at:g}s will be skipped"
            )

    links = {gw: GatewayLink(gw, url) for gw, url in lan.items() if gw in known}
    by_gateway: dict[str, list[str]] = {gw: [] for gw in links}
    for dev_id, gw in fleet.gateway_of.items():
        by_gateway[gw].append(dev_id)
    schedule = _Schedule(fleet.models)
    dev_link = [links[fleet.gateway_of[d]] for d in schedule.ids]
    topics = [
        {ch: device_topic(d, ch) for ch in ("telemetry", "event", "status")} for d in schedule.ids
    ]
    events: dict[str, int] = {}
    say(
        f"simulating {len(fleet.models)} devices on {len(links)} gateways "
        f"(seed {seed}, time x{time_scale:g})"
    )

    applied = 0
    sim_s = 0.0
    final = ""
    try:
        for link in links.values():
            link.start()
        t0 = time.monotonic()
        next_progress = t0 + progress_every_s
        next_action = 0
        ticks = 0
        while True:
            sim_s = (time.monotonic() - t0) * time_scale
            if duration_s is not None:
                sim_s = min(sim_s, float(duration_s))
            now_ms = t_start_ms + int(sim_s * 1000)
            for gw, link in links.items():
                if link.take_status_request():
                    for dev_id in by_gateway[gw]:
                        model = fleet.models[dev_id]
                        link.publish(device_topic(dev_id, "status"), "status", model.status())
            while next_action < len(timeline) and timeline[next_action].at <= sim_s:
                act = timeline[next_action]
                next_action += 1
                if act.device is not None and act.device in schedule.index:
                    applied += _apply(fleet, act, t_start_ms, say)
                    schedule.reschedule(schedule.index[act.device])
            for i in schedule.pop_due(now_ms):
                link = dev_link[i]
                for channel, payload in schedule.models[i].step(now_ms):
                    if channel == "event":
                        events[payload["type"]] = events.get(payload["type"], 0) + 1
                    link.publish(topics[i][channel], channel, payload)
                schedule.reschedule(i)
            for link in links.values():
                link.prune()
                while link.notes:
                    say(link.notes.popleft())
            if time.monotonic() >= next_progress:
                next_progress += progress_every_s
                say(_progress(sim_s, links, time.monotonic() - t0))
            if duration_s is not None and sim_s >= duration_s:
                break
            ticks += 1
            if halt.wait(max(0.0, t0 + ticks * tick_s - time.monotonic())):
                break
        final = _progress(sim_s, links, time.monotonic() - t0)
    finally:
        for link in links.values():
            link.close()
            while link.notes:
                say(link.notes.popleft())

    summary = SimSummary(
        devices=len(fleet.models),
        gateways=len(links),
        skipped=len(fleet.skipped),
        sent=_total(links, "sent"),
        dropped=_total(links, "dropped"),
        actions=applied,
        sim_s=sim_s,
        wall_s=time.monotonic() - wall0,
        events=events,
    )
    say(f"simulation ended after {sim_s:.1f} device seconds ({final})")
    return summary


def _apply(fleet: Fleet, act: ScenarioAction, start_ms: int, say: Callable[[str], None]) -> int:
    """Apply one scenario action at its own device time; 1 if applied, else 0."""
    assert act.device is not None
    model = fleet.models.get(act.device)
    if model is None:
        return 0
    try:
        model.inject(act.action, act.params, start_ms + int(act.at * 1000))
    except SimulatorError as exc:
        say(f"scenario t={act.at:g}s: {act.device} {act.action} failed: {exc}")
        return 0
    say(f"scenario t={act.at:g}s: {act.device} {act.action}{_fmt_params(act)}")
    return 1


def _log_skipped(fleet: Fleet, say: Callable[[str], None]) -> None:
    if not fleet.skipped:
        return
    kinds: dict[str, int] = {}
    for kind in fleet.skipped.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    listing = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    say(f"skipping {len(fleet.skipped)} devices without a simulator model: {listing}")


def _total(links: Mapping[str, GatewayLink], what: str) -> dict[str, int]:
    out = {"telemetry": 0, "event": 0, "status": 0}
    for link in links.values():
        for channel, n in (link.sent if what == "sent" else link.dropped).items():
            out[channel] += n
    return out


def _progress(sim_s: float, links: Mapping[str, GatewayLink], wall_s: float) -> str:
    sent = _total(links, "sent")
    dropped = sum(_total(links, "dropped").values())
    up = sum(1 for link in links.values() if link.connected)
    rate = sum(sent.values()) / wall_s if wall_s > 0 else 0.0
    return (
        f"t={sim_s:.0f}s, {up}/{len(links)} gateways connected, sent "
        f"{sent['telemetry']} telemetry, {sent['event']} events, {sent['status']} status "
        f"({rate:,.0f}/s), {dropped} dropped"
    )
