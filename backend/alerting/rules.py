"""Alert rules: small pure functions of (device, state, input) -> decisions.

A rule reads the device's registry entry and its state, may update its own timers in
``state.since`` (keyed by the alert type), and returns what should happen to the alert of its
type. The lifecycle (``backend.alerting.lifecycle``) turns decisions into alerts. Rules never do
I/O and never read a clock: time is the device time carried by the input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from anju.contract import Severity
from anju.registry import DeviceInfo
from backend.alerting.model import (
    Clear,
    Decision,
    DeviceEvent,
    DeviceState,
    Input,
    Raise,
    Telemetry,
    Update,
)

Rule = Callable[[DeviceInfo, DeviceState, Input], list[Decision]]

TRAPPED: Final = "elevator.trapped"
FIRE_ALARM: Final = "fire.alarm"
DEFAULT_TRAP_S: Final = 30.0
FIRE_CONFIRM_WINDOW_MS: Final = 120_000


def _param(dev: DeviceInfo, name: str, default: float) -> float:
    v = dev.params.get(name, default)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else default


def _moving(values: Mapping[str, Any]) -> bool | None:
    """Whether the car moves; from ``moving``, else from ``speed_mps``; None when unknown."""
    m = values.get("moving")
    if isinstance(m, bool):
        return m
    s = values.get("speed_mps")
    if isinstance(s, int | float) and not isinstance(s, bool):
        return abs(s) > 0.05
    return None


def elevator_trapped(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``elevator.trapped``: passenger inside, door closed, not moving, for ``trap_s``; at once
    on ``alarm_button`` with a passenger inside a stopped car. Clears when the door opens in the
    door zone."""
    v = st.values
    trap_ms = int(_param(dev, "trap_s", DEFAULT_TRAP_S) * 1000)
    stopped = _moving(v) is False
    if TRAPPED in st.open:
        if v.get("door") == "open" and v.get("in_door_zone") is True:
            st.since.pop(TRAPPED, None)
            return [Clear(TRAPPED, "door opened in the door zone")]
        return []
    if isinstance(inp, DeviceEvent):
        if inp.type == "alarm_button" and v.get("passenger") is True and stopped:
            start = st.since.get(TRAPPED, inp.ts)
            return [_trapped(v, start, inp.ts, alarm_button=True)]
        return []
    if v.get("passenger") is True and v.get("door") == "closed" and stopped:
        start = st.since.setdefault(TRAPPED, inp.ts)
        if inp.ts - start >= trap_ms:
            return [_trapped(v, start, inp.ts, alarm_button=False)]
    else:
        st.since.pop(TRAPPED, None)
    return []


def _trapped(v: Mapping[str, Any], start: int, now: int, *, alarm_button: bool) -> Raise:
    between = v.get("in_door_zone") is False
    title = (
        "电梯困人（非平层） Passengers trapped between floors"
        if between
        else ("电梯困人 Passengers trapped")
    )
    evidence: dict[str, Any] = {
        "door": v.get("door"),
        "passenger": v.get("passenger"),
        "in_door_zone": v.get("in_door_zone"),
        "floor": v.get("floor"),
        "stopped_s": round((now - start) / 1000, 3),
    }
    if alarm_button:
        evidence["alarm_button"] = True
    return Raise(TRAPPED, Severity.CRITICAL, title, start, evidence)


_FIRE_TRIGGERS: Final = {
    "smoke_detector": frozenset({"alarm"}),
    "heat_detector": frozenset({"alarm"}),
    "manual_call_point": frozenset({"alarm"}),
    "fire_panel": frozenset({"fire"}),
}


_SMOKE_ON: Final = "fire.alarm/smoke"


def _fire_source(dev: DeviceInfo, st: DeviceState, inp: Input) -> str | None:
    """The independent source of a fire trigger in this input, or None if it is not one."""
    kinds = _FIRE_TRIGGERS.get(dev.kind)
    if kinds is None:
        return None
    if isinstance(inp, DeviceEvent) and inp.type in kinds:
        if dev.kind == "fire_panel":
            d = inp.data
            return f"{dev.id}/{d.get('system_addr', '')}/{d.get('component_addr', '')}"
        return dev.id
    if isinstance(inp, Telemetry) and dev.kind == "smoke_detector" and "smoke" in inp.metrics:
        # A detector that reports ``smoke: true`` is in alarm: the rising edge is a trigger.
        if inp.metrics["smoke"] is True:
            if _SMOKE_ON not in st.since:
                st.since[_SMOKE_ON] = inp.ts
                return dev.id
        else:
            st.since.pop(_SMOKE_ON, None)
    return None


def fire_alarm(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``fire.alarm``: raised at once on the first trigger, never delayed for confirmation.
    A second independent trigger in the same building within 120 s marks the building's open
    fire alarms confirmed (GB 50116). A panel ``reset`` clears the panel's alarm; detectors'
    alarms are resolved by a person."""
    if (
        dev.kind == "fire_panel"
        and isinstance(inp, DeviceEvent)
        and inp.type == "reset"
        and FIRE_ALARM in st.open
    ):
        return [Clear(FIRE_ALARM, "fire panel reset")]
    source = _fire_source(dev, st, inp)
    if source is None:
        return []
    b = st.building
    b.fire_triggers[:] = [t for t in b.fire_triggers if inp.ts - t[0] <= FIRE_CONFIRM_WINDOW_MS]
    others = [t for t in b.fire_triggers if t[1] != source]
    b.fire_triggers.append((inp.ts, source, dev.id))
    confirmed = bool(others)
    trigger = inp.type if isinstance(inp, DeviceEvent) else "smoke"
    evidence: dict[str, Any] = {"trigger": f"{dev.kind} {trigger}", "confirmed": confirmed}
    if confirmed:
        evidence["confirmed_by"] = sorted({t[2] for t in others})
    out: list[Decision] = []
    if FIRE_ALARM in st.open:
        # Already alarmed: only a confirmation is news (no republish per repeated trigger).
        if confirmed:
            out.append(
                Update(FIRE_ALARM, {"confirmed": True, "confirmed_by": evidence["confirmed_by"]})
            )
    else:
        out.append(Raise(FIRE_ALARM, Severity.CRITICAL, "火警 Fire alarm", inp.ts, evidence))
    if confirmed:
        for other in sorted({t[2] for t in others if t[2] != dev.id}):
            out.append(
                Update(FIRE_ALARM, {"confirmed": True, "confirmed_by": [dev.id]}, device_id=other)
            )
    return out


RULES_BY_KIND: Final[Mapping[str, tuple[Rule, ...]]] = {
    "elevator": (elevator_trapped,),
    "smoke_detector": (fire_alarm,),
    "heat_detector": (fire_alarm,),
    "manual_call_point": (fire_alarm,),
    "fire_panel": (fire_alarm,),
}
