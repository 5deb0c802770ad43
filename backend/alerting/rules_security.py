"""Security and access rules (ALERTS.md, "Security and access"), and the cameras' elevator
e-bike detection (``elevator.ebike``, raised on the elevator the camera watches)."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from anju.registry import DeviceInfo
from backend.alerting.model import Clear, Decision, DeviceEvent, DeviceState, Input
from backend.alerting.rules_common import door_held_open, ms, on_event, quiet_clear, raise_

EMERGENCY: Final = "security.emergency_button"
INTRUSION: Final = "security.perimeter_intrusion"
THROWN: Final = "security.object_thrown"
TAMPER: Final = "security.tamper"
FORCED: Final = "access.door_forced"
DURESS: Final = "access.duress"
DOOR_HELD: Final = "access.door_held_open"
TAILGATING: Final = "access.tailgating"
EBIKE: Final = "elevator.ebike"

_INTRUSION_EVENTS: Final = frozenset({"intrusion", "perimeter_intrusion"})


def security_emergency_button(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``pressed``; latching (GB 50394): a device ``reset`` does not clear it, a person does."""
    return on_event(st, inp, frozenset({"pressed"}), EMERGENCY, "紧急求助 Emergency button")


def security_perimeter_intrusion(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``intrusion`` (perimeter) or ``perimeter_intrusion`` (camera); clears after 10 min
    without another, or by a person."""
    out = on_event(st, inp, _INTRUSION_EVENTS, INTRUSION, "周界入侵 Perimeter intrusion")
    return out + quiet_clear(st, inp, INTRUSION, ms(dev, "quiet_s"), _INTRUSION_EVENTS)


def security_object_thrown(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``object_thrown`` (高空抛物); resolved by a person."""
    return on_event(st, inp, frozenset({"object_thrown"}), THROWN, "高空抛物 Object thrown")


def security_tamper(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``tamper`` on any security, access or fire device; resolved by a person."""
    return on_event(st, inp, frozenset({"tamper"}), TAMPER, "设备防拆报警 Tamper")


def access_door_forced(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``door_forced``, or the door opening with no ``access_granted`` in the 10 s before;
    clears when the door closes."""
    title = "门被强行打开 Door forced"
    if isinstance(inp, DeviceEvent) and inp.type == "access_granted":
        st.since["access/granted"] = inp.ts
    door = st.values.get("door")
    prev = st.mem.get("access/door")
    st.mem["access/door"] = door
    if FORCED in st.open:
        return [Clear(FORCED, "door closed")] if door == "closed" else []
    if isinstance(inp, DeviceEvent) and inp.type == "door_forced":
        return [raise_(FORCED, title, inp.ts, {"event": "door_forced"})]
    if prev == "closed" and door == "open":
        granted = st.since.get("access/granted")
        if granted is None or inp.ts - granted > ms(dev, "forced_grant_window_s"):
            return [raise_(FORCED, title, inp.ts, {"door": "open", "access_granted": False})]
    return []


def access_duress(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``duress`` (a code entered under threat); resolved by a person."""
    return on_event(st, inp, frozenset({"duress"}), DURESS, "胁迫报警 Duress")


def access_door_held_open(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Door open for ``held_open_limit_s`` (180 s); clears when closed. Property only."""
    return door_held_open(dev, st, inp, DOOR_HELD, "门禁长时间未关 Door held open")


def access_tailgating(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``tailgating``; clears after 10 min without another, or by a person. Property only."""
    ev = frozenset({"tailgating"})
    out = on_event(st, inp, ev, TAILGATING, "尾随进入 Tailgating")
    return out + quiet_clear(st, inp, TAILGATING, ms(dev, "quiet_s"), ev)


def camera_elevator_ebike(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``ebike_detected`` in zone ``elevator`` twice within 5 s raises ``elevator.ebike`` on
    the elevator named by the camera's ``elevator`` param (on the camera itself when it names
    none); clears after 60 s without a detection."""
    target = dev.params.get("elevator")
    target_id = str(target) if isinstance(target, str) else None
    last = st.since.get(EBIKE)
    is_open = st.mem.get(EBIKE) == 1
    if (
        isinstance(inp, DeviceEvent)
        and inp.type == "ebike_detected"
        and inp.data.get("zone", "elevator") == "elevator"
    ):
        st.since[EBIKE] = inp.ts
        if not is_open and last is not None and inp.ts - last <= ms(dev, "ebike_window_s"):
            st.mem[EBIKE] = 1
            ev = {"camera": dev.id, "detections": 2}
            title = "电动车进电梯 E-bike in the elevator"
            return [replace(raise_(EBIKE, title, last, ev), device_id=target_id)]
        return []
    if is_open and last is not None and inp.ts - last >= ms(dev, "ebike_clear_s"):
        st.mem.pop(EBIKE, None)
        st.since.pop(EBIKE, None)
        return [Clear(EBIKE, "60 s without a detection", target_id)]
    if not is_open and last is not None and inp.ts - last > ms(dev, "ebike_window_s"):
        st.since.pop(EBIKE, None)
    return []
