"""Play a scenario in-process, without a broker: devices -> gateway normalisation -> rules.

The device models are stepped in simulated device time (a 30-minute scenario runs in well
under a second); what they publish is encoded as on the LAN, decoded and validated exactly as
the gateway does (``gateway.validate.decode_device_message``), wrapped in uplink ``Record``s
with the gateway's receive time, and fed in order to a rule engine (``feed(record, now_ms)``;
``tick(now_ms)`` every second). Time never comes from the wall clock, so the rules see device
time as they would live, and a run is deterministic for a given seed.

Gateways are modelled too: every ``heartbeat_s`` a gateway reports itself online, and a
scenario's ``uplink_cut`` makes it go offline (its Last Will) while its records wait in the
outbox; ``uplink_restore`` reports it online and replays the outbox, events and statuses first
(the outbox's two lanes). The engine hears about gateways through an optional method
``gateway_state(gateway_id, online, now_ms)``; an engine without it simply does not see them.

The engine is duck-typed so that this module does not depend on the backend: pass
``backend.alerting.Engine(CityIndex(registry))``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from anju.contract import device_topic
from anju.registry import Registry
from anju.uplink import Record
from device_simulators.base import Behaviour, SimulatorError
from device_simulators.fleet import Timing, build_fleet
from device_simulators.mqttlink import encode
from device_simulators.scenario import Scenario, ScenarioAction
from gateway.validate import Accepted, Rejected, decode_device_message

DEFAULT_START_MS = 1_764_122_400_000
"""2025-11-26 10:00:00 +08:00, a Wednesday morning."""


class RuleEngine(Protocol):
    """What the harness needs of the backend's rule engine."""

    def feed(self, rec: Record, now_ms: int) -> Sequence[Any]: ...

    def tick(self, now_ms: int) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One alert change the engine produced, at a simulated second."""

    at_s: float
    action: str
    type: str
    device: str
    severity: str


@dataclass(slots=True)
class ScenarioResult:
    """What a scenario did: every alert change, the messages sent and any rejected."""

    changes: list[AlertChange] = field(default_factory=list)
    messages: int = 0
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """(device, reason, detail) of anything the gateway's validation refused."""

    @property
    def raised(self) -> list[tuple[str, str]]:
        """(alert type, device) of every raise, in order."""
        return [(c.type, c.device) for c in self.changes if c.action == "raised"]

    def severity_at_raise(self, alert_type: str, device: str) -> str | None:
        for c in self.changes:
            if c.action == "raised" and (c.type, c.device) == (alert_type, device):
                return c.severity
        return None

    def log(self) -> str:
        """The changes, one per line (for a failing test's message)."""
        return "\n".join(
            f"  t={c.at_s:7.1f}s {c.action:<12} {c.type:<34} {c.device} ({c.severity})"
            for c in self.changes
        )


@dataclass(slots=True)
class _Gateway:
    devices: set[str]
    up: bool = True
    held: list[Record] = field(default_factory=list)
    next_heartbeat_ms: int = 0


def run_scenario(
    scenario: Scenario,
    registry: Registry,
    engine: RuleEngine,
    *,
    start_ms: int = DEFAULT_START_MS,
    duration_s: float | None = None,
    step_ms: int = 100,
    latency_ms: int = 5,
    heartbeat_s: float = 30.0,
    behaviour: Behaviour | None = None,
    timing: Timing | None = None,
) -> ScenarioResult:
    """Run ``scenario`` over ``registry``'s devices against ``engine``.

    ``duration_s`` defaults to the scenario's own, else 60 s after its last action. Background
    behaviour defaults to ``Behaviour.quiet()`` (no false alarms), so that the raised alerts are
    the scenario's. Raises SimulatorError when an action does not fit its device.
    """
    if duration_s is not None:
        end_s = duration_s
    elif scenario.duration_s is not None:
        end_s = scenario.duration_s
    else:
        end_s = max((a.at for a in scenario.actions), default=0.0) + 60.0
    end_ms = start_ms + int(end_s * 1000)
    fleet = build_fleet(
        registry,
        seed=scenario.seed,
        start_ms=start_ms,
        timing=timing,
        behaviour=behaviour or Behaviour.quiet(),
    )
    gateways = {gw.id: _Gateway(set()) for c in registry.communities for gw in c.gateways}
    for dev_id, gw_id in fleet.gateway_of.items():
        gateways[gw_id].devices.add(dev_id)
    gateway_state = getattr(engine, "gateway_state", None)
    boot = str(uuid.UUID(int=scenario.seed))
    seq = 0
    result = ScenarioResult()
    timeline = scenario.timeline()
    next_action = 0

    def note(changes: Iterable[Any], now_ms: int) -> None:
        for ch in changes:
            alert = ch.alert
            result.changes.append(
                AlertChange(
                    at_s=(now_ms - start_ms) / 1000,
                    action=str(ch.action),
                    type=str(alert.type),
                    device=str(alert.device.id),
                    severity=str(alert.severity),
                )
            )

    def deliver(rec: Record, now_ms: int) -> None:
        gw = gateways[rec.gateway_id]
        if gw.up:
            note(engine.feed(rec, now_ms + latency_ms), now_ms + latency_ms)
        else:
            gw.held.append(rec)

    def gateway_action(act: ScenarioAction, now_ms: int) -> None:
        assert act.gateway is not None
        gw = gateways[act.gateway]
        if act.action == "uplink_cut" and gw.up:
            gw.up = False
            if callable(gateway_state):
                note(gateway_state(act.gateway, False, now_ms), now_ms)
        elif act.action == "uplink_restore" and not gw.up:
            gw.up = True
            if callable(gateway_state):
                note(gateway_state(act.gateway, True, now_ms), now_ms)
            held = sorted(gw.held, key=lambda r: (r.kind == "t", r.seq))  # events lane first
            gw.held = []
            for rec in held:
                deliver(rec, now_ms)

    now_ms = start_ms
    while True:
        while next_action < len(timeline) and start_ms + timeline[next_action].at * 1000 <= now_ms:
            act = timeline[next_action]
            next_action += 1
            at_ms = start_ms + int(act.at * 1000)
            if act.gateway is not None:
                gateway_action(act, at_ms)
                continue
            assert act.device is not None
            model = fleet.models.get(act.device)
            if model is None:
                raise SimulatorError(act.device, "is not simulated, so a scenario cannot drive it")
            model.inject(act.action, act.params, at_ms)
        for gw_id, gw in gateways.items():
            if gw.up and now_ms >= gw.next_heartbeat_ms:
                gw.next_heartbeat_ms = now_ms + int(heartbeat_s * 1000)
                if callable(gateway_state):
                    note(gateway_state(gw_id, True, now_ms), now_ms)
        for dev_id, model in fleet.models.items():
            if model.due_ms() > now_ms and not model.pending:
                continue
            gw_id = fleet.gateway_of[dev_id]
            for channel, payload in model.step(now_ms):
                result.messages += 1
                items = decode_device_message(
                    device_topic(dev_id, channel),
                    encode(payload),
                    known=gateways[gw_id].devices,
                    rx_ms=now_ms,
                )
                for item in items:
                    if isinstance(item, Rejected):
                        result.rejected.append((dev_id, item.reason, item.detail))
                        continue
                    assert isinstance(item, Accepted)
                    seq += 1
                    deliver(_record(gw_id, boot, seq, item, now_ms), now_ms)
        if (now_ms - start_ms) % 1000 == 0:
            note(engine.tick(now_ms + latency_ms), now_ms + latency_ms)
        if now_ms >= end_ms:
            return result
        now_ms = min(end_ms, now_ms + step_ms)


def _record(gateway_id: str, boot: str, seq: int, item: Accepted, rx_ms: int) -> Record:
    body = item.payload
    return Record(
        gateway_id=gateway_id,
        boot_id=boot,
        seq=seq,
        device_id=item.device_id,
        kind=item.kind,
        ts=item.ts,
        rx=rx_ms,
        gateway_timed=item.gateway_timed,
        metrics=body.get("m"),
        event_type=body.get("e"),
        data=body.get("x"),
        status=body.get("s"),
    )
