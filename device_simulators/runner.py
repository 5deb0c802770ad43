"""Run simulated devices against the communities' LAN brokers, in real or compressed time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from anju.contract import device_topic
from anju.registry import Registry
from device_simulators.base import SimulatorError
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


def _fmt_params(action: ScenarioAction) -> str:
    if not action.params:
        return ""
    inner = ", ".join(f"{k}={v}" for k, v in action.params.items())
    return f" ({inner})"


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
) -> SimSummary:
    """Simulate the devices of the gateways in ``lan`` (gateway id -> ``mqtt://host:port``).

    Device time is ``start_ms + elapsed * time_scale`` (``start_ms`` defaults to the wall clock
    now). ``duration_s`` and the scenario's ``at`` times are device seconds; without
    ``duration_s`` the simulation runs until ``stop`` is set (a scenario's own ``duration_s``
    is advice for the caller: pass it on to stop when the scenario is over). Connection
    failures are retried in the background and never raise; messages that cannot be sent are
    counted in ``SimSummary.dropped``.
    """
    if time_scale <= 0 or tick_s <= 0:
        raise ValueError(f"time_scale and tick_s must be positive ({time_scale}, {tick_s})")
    say: Callable[[str], None] = log or (lambda _line: None)
    halt = stop or threading.Event()
    t_start_ms = int(time.time() * 1000) if start_ms is None else start_ms

    known = {gw.id for c in registry.communities for gw in c.gateways}
    for gw_id in sorted(set(lan) - known):
        say(f"gateway {gw_id} is not in the registry; nothing to simulate there")
    fleet = build_fleet(registry, seed=seed, start_ms=t_start_ms, gateways=set(lan), timing=timing)
    _log_skipped(fleet, say)
    timeline = scenario.timeline() if scenario is not None else []
    for act in timeline:
        if act.device not in fleet.models:
            say(
                f"scenario: {act.device} is not simulated here; its {act.action} at "
                f"t={act.at:g}s will be skipped"
            )

    links = {gw: GatewayLink(gw, url) for gw, url in lan.items() if gw in known}
    by_gateway: dict[str, list[str]] = {gw: [] for gw in links}
    for dev_id, gw in fleet.gateway_of.items():
        by_gateway[gw].append(dev_id)
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
        next_progress = t0 + PROGRESS_EVERY_S
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
                applied += _apply(fleet, act, t_start_ms, say)
            for dev_id, model in fleet.models.items():
                link = links[fleet.gateway_of[dev_id]]
                for channel, payload in model.step(now_ms):
                    link.publish(device_topic(dev_id, channel), channel, payload)
            for link in links.values():
                link.prune()
                while link.notes:
                    say(link.notes.popleft())
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY_S
                say(_progress(sim_s, links))
            if duration_s is not None and sim_s >= duration_s:
                break
            ticks += 1
            if halt.wait(max(0.0, t0 + ticks * tick_s - time.monotonic())):
                break
        final = _progress(sim_s, links)
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
    )
    say(f"simulation ended after {sim_s:.1f} device seconds ({final})")
    return summary


def _apply(fleet: Fleet, act: ScenarioAction, start_ms: int, say: Callable[[str], None]) -> int:
    """Apply one scenario action at its own device time; 1 if applied, else 0."""
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


def _progress(sim_s: float, links: Mapping[str, GatewayLink]) -> str:
    sent = _total(links, "sent")
    dropped = sum(_total(links, "dropped").values())
    up = sum(1 for link in links.values() if link.connected)
    return (
        f"t={sim_s:.0f}s, {up}/{len(links)} gateways connected, sent "
        f"{sent['telemetry']} telemetry, {sent['event']} events, {sent['status']} status, "
        f"{dropped} dropped"
    )
