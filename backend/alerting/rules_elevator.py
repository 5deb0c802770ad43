"""Elevator rules (ALERTS.md, "Elevator"): GB/T 24476 signals and fault codes.

Every rule is a pure function of (device, state, input); timers live in ``state.since`` and
small windows in ``state.mem``. Time is device time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from anju.contract import Severity
from anju.registry import DeviceInfo
from backend.alerting.model import Clear, Decision, DeviceEvent, DeviceState, Input, Telemetry
from backend.alerting.rules_common import held, is_num, ms, param, raise_

TRAPPED: Final = "elevator.trapped"
ALARM_BUTTON: Final = "elevator.alarm_button"
TOP: Final = "elevator.overtravel_top"
BOTTOM: Final = "elevator.overtravel_bottom"
DOOR_MOVING: Final = "elevator.door_open_moving"
OVERSPEED: Final = "elevator.overspeed"
STOPPED_OUT: Final = "elevator.stopped_outside_door_zone"
POWER: Final = "elevator.power_loss"
FAULT: Final = "elevator.fault"
DOOR_HELD: Final = "elevator.door_held_open"
DOOR_CYCLING: Final = "elevator.door_cycling"
EBIKE: Final = "elevator.ebike"

FAULT_CODES: Final = {
    "01": "safety circuit open 安全回路断路",
    "02": "door close failure 关门故障",
    "03": "door open failure 开门故障",
    "06": "run-time limiter 运行时间限制器动作",
    "07": "position lost 楼层位置丢失",
    "08": "restart prevention 防止电梯再运行",
}


def moving(v: Mapping[str, Any]) -> bool | None:
    """Whether the car moves; from ``moving``, else from ``speed_mps``; None when unknown."""
    m = v.get("moving")
    if isinstance(m, bool):
        return m
    s = v.get("speed_mps")
    if is_num(s):
        return bool(abs(s) > 0.05)
    return None


def _fault(inp: Input, *codes: str) -> bool:
    return (
        isinstance(inp, DeviceEvent)
        and inp.type == "fault"
        and str(inp.data.get("code", "")).zfill(2) in codes
    )


def elevator_trapped(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Passenger inside, door closed, not moving, for ``trap_s``; at once on ``alarm_button``
    with a passenger in a stopped car. Clears when the door opens in the door zone."""
    v = st.values
    stopped = moving(v) is False
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
    cond = v.get("passenger") is True and v.get("door") == "closed" and stopped
    elapsed = held(st, TRAPPED, cond, inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "trap_s"):
        return [_trapped(v, st.since[TRAPPED], inp.ts, alarm_button=False)]
    return []


def _trapped(v: Mapping[str, Any], start: int, now: int, *, alarm_button: bool) -> Decision:
    between = v.get("in_door_zone") is False
    title = (
        "电梯困人（非平层） Passengers trapped between floors"
        if between
        else "电梯困人 Passengers trapped"
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
    return raise_(TRAPPED, title, start, evidence)


def elevator_alarm_button(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``alarm_button`` when no trapped alert is open; resolved by a person."""
    if not (isinstance(inp, DeviceEvent) and inp.type == "alarm_button"):
        return []
    if TRAPPED in st.open or ALARM_BUTTON in st.open:
        return []
    ev = {"floor": st.values.get("floor"), "passenger": st.values.get("passenger")}
    return [raise_(ALARM_BUTTON, "电梯紧急呼叫 Alarm button pressed", inp.ts, ev)]


def top_floor(dev: DeviceInfo) -> int | None:
    """The top floor: ``top_floor`` if given, else from ``floors`` and ``lowest_floor``
    (buildings have no floor 0: floors 18 from -1 means -1, 1..17)."""
    if is_num(dev.params.get("top_floor")):
        return int(dev.params["top_floor"])
    floors, lowest = dev.params.get("floors"), dev.params.get("lowest_floor", 1)
    if not (is_num(floors) and is_num(lowest)):
        return None
    top = int(lowest) + int(floors) - 1
    return top + 1 if int(lowest) < 0 < top + 1 else top


def _overtravel(dev: DeviceInfo, st: DeviceState, inp: Input, *, top: bool) -> list[Decision]:
    atype, switch, code, direction = (
        (TOP, "up_limit", "09", "up") if top else (BOTTOM, "down_limit", "10", "down")
    )
    v = st.values
    lowest = dev.params.get("lowest_floor", 1)
    end_floor = top_floor(dev) if top else (int(lowest) if is_num(lowest) else None)
    in_zone = v.get("in_door_zone")
    if atype in st.open:
        if in_zone is True and v.get(switch) is not True:
            st.since.pop(atype, None)
            return [Clear(atype, "back in the door zone, limit switch off")]
        return []
    if _fault(inp, code):
        return [raise_(atype, _OT_TITLE[top], inp.ts, {"fault_code": code})]
    if v.get(switch) is True:
        return [raise_(atype, _OT_TITLE[top], inp.ts, {switch: True, "floor": v.get("floor")})]
    cond = (
        end_floor is not None
        and v.get("floor") == end_floor
        and moving(v) is True
        and v.get("direction") == direction
        and in_zone is False
    )
    elapsed = held(st, atype, cond, inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "overtravel_s"):
        ev = {"floor": v.get("floor"), "direction": direction, "out_of_zone_s": elapsed / 1000}
        return [raise_(atype, _OT_TITLE[top], st.since[atype], ev)]
    return []


_OT_TITLE: Final = {
    True: "电梯冲顶 Overtravel at the top",
    False: "电梯蹲底 Overtravel at the bottom",
}


def elevator_overtravel_top(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Up limit switch; or at the top floor moving up out of the door zone for 20 s; code 09."""
    return _overtravel(dev, st, inp, top=True)


def elevator_overtravel_bottom(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Down limit switch; or at the bottom floor moving down out of the zone for 20 s; code 10."""
    return _overtravel(dev, st, inp, top=False)


def elevator_door_open_moving(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Moving with the door open outside the door zone on two consecutive readings; code 05.
    Clears when the car is not moving."""
    v = st.values
    if DOOR_MOVING in st.open:
        if moving(v) is False:
            return [Clear(DOOR_MOVING, "the car stopped")]
        return []
    title = "电梯开门走车 Moving with the door open"
    if _fault(inp, "05"):
        return [raise_(DOOR_MOVING, title, inp.ts, {"fault_code": "05"})]
    if not isinstance(inp, Telemetry):
        return []
    bad = moving(v) is True and v.get("door") == "open" and v.get("in_door_zone") is False
    n = st.mem[DOOR_MOVING] = st.mem.get(DOOR_MOVING, 0) + 1 if bad else 0
    if n >= 2:
        st.mem[DOOR_MOVING] = 0
        ev = {"floor": v.get("floor"), "speed_mps": v.get("speed_mps"), "readings": n}
        return [raise_(DOOR_MOVING, title, inp.ts, ev)]
    return []


def elevator_overspeed(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Speed above 1.15 x rated (major) or 1.4 x rated (critical) on two consecutive readings;
    clears after 60 s below the limit. A major alert becomes critical when the speed passes
    the higher limit (the lifecycle raises the severity of the open alert)."""
    if OVERSPEED not in st.open and not isinstance(inp, Telemetry):
        return []
    rated = param(dev, "rated_speed_mps")
    limit = rated * param(dev, "overspeed_major_x")
    crit = rated * param(dev, "overspeed_critical_x")
    out: list[Decision] = []
    speed = st.values.get("speed_mps")
    if isinstance(inp, Telemetry) and "speed_mps" in inp.metrics and is_num(speed):
        s = abs(float(speed))
        window: list[float] = st.mem.get(OVERSPEED, [])
        window = [*window[-1:], s]
        st.mem[OVERSPEED] = window
        if len(window) == 2 and min(window) > limit:
            sev = Severity.CRITICAL if min(window) > crit else Severity.MAJOR
            ev = {"speed_mps": s, "rated_speed_mps": rated, "ratio": round(s / rated, 3)}
            crit_key = f"{OVERSPEED}/critical"
            if OVERSPEED not in st.open or (sev is Severity.CRITICAL and crit_key not in st.mem):
                if sev is Severity.CRITICAL:
                    st.mem[crit_key] = 1
                out.append(raise_(OVERSPEED, _SPEED_TITLE[sev], inp.ts, ev, sev))
    if OVERSPEED in st.open:
        below = is_num(speed) and abs(float(speed)) <= limit
        elapsed = held(st, OVERSPEED, below, inp.ts)
        if elapsed is not None and elapsed >= ms(dev, "overspeed_clear_s"):
            st.since.pop(OVERSPEED, None)
            st.mem.pop(f"{OVERSPEED}/critical", None)
            out.append(Clear(OVERSPEED, "below the limit for 60 s"))
    return out


_SPEED_TITLE: Final = {
    Severity.MAJOR: "电梯超速 Overspeed",
    Severity.CRITICAL: "电梯严重超速 Severe overspeed",
}


def elevator_stopped_outside_door_zone(
    dev: DeviceInfo, st: DeviceState, inp: Input
) -> list[Decision]:
    """Not moving, out of the door zone, no passenger, for 60 s; fault code 04. Clears in the
    door zone."""
    v = st.values
    title = "电梯非平层停梯 Stopped outside the door zone"
    if STOPPED_OUT in st.open:
        if v.get("in_door_zone") is True:
            return [Clear(STOPPED_OUT, "in the door zone")]
        return []
    if _fault(inp, "04"):
        return [raise_(STOPPED_OUT, title, inp.ts, {"fault_code": "04"})]
    cond = moving(v) is False and v.get("in_door_zone") is False and v.get("passenger") is False
    elapsed = held(st, STOPPED_OUT, cond, inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "stopped_outside_s"):
        ev = {"floor": v.get("floor"), "stopped_s": elapsed / 1000}
        return [raise_(STOPPED_OUT, title, st.since.pop(STOPPED_OUT), ev)]
    return []


def elevator_power_loss(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``power: outage``; clears on ``power: normal``."""
    if not (isinstance(inp, Telemetry) and "power" in inp.metrics):
        return []
    p = inp.metrics["power"]
    if p == "outage" and POWER not in st.open:
        ev = {"power": p, "floor": st.values.get("floor")}
        return [raise_(POWER, "电梯停电 Power loss", inp.ts, ev)]
    if p == "normal" and POWER in st.open:
        return [Clear(POWER, "power normal")]
    return []


def elevator_fault(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``fault`` events with GB/T 24476 codes 01-03 and 06-08; resolved by a person. Another
    code while open adds to the evidence."""
    if not _fault(inp, *FAULT_CODES):
        return []
    assert isinstance(inp, DeviceEvent)
    code = str(inp.data.get("code")).zfill(2)
    ev = {"fault_code": code, "fault": FAULT_CODES[code]}
    return [raise_(FAULT, f"电梯故障 Fault {code}: {FAULT_CODES[code]}", inp.ts, ev)]


def elevator_door_held_open(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """In normal service (or no ``service_mode`` reported), not moving, door open for 120 s;
    clears when the door closes."""
    v = st.values
    if DOOR_HELD in st.open:
        if v.get("door") == "closed":
            return [Clear(DOOR_HELD, "door closed")]
        return []
    if isinstance(inp, DeviceEvent):
        return []
    cond = (
        v.get("service_mode", "normal") == "normal"
        and moving(v) is False
        and v.get("door") == "open"
    )
    elapsed = held(st, DOOR_HELD, cond, inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "door_held_open_s"):
        ev = {"floor": v.get("floor"), "open_s": elapsed / 1000}
        return [raise_(DOOR_HELD, "电梯门长时间未关 Door held open", st.since[DOOR_HELD], ev)]
    return []


def elevator_door_cycling(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """5 or more open-close cycles within 60 s while not moving; clears after 60 s without a
    cycle. The window of closing times is counted with numpy."""
    key, last_key = DOOR_CYCLING, f"{DOOR_CYCLING}/last"
    window_ms = ms(dev, "door_cycle_window_s")
    if isinstance(inp, Telemetry) and "door" in inp.metrics:
        prev = st.mem.get(f"{key}/door")
        door = inp.metrics["door"]
        st.mem[f"{key}/door"] = door
        if moving(st.values) is True:
            st.mem[key] = []
        elif prev == "open" and door == "closed":
            ts = np.asarray([*st.mem.get(key, []), inp.ts], dtype=np.int64)
            ts = ts[ts > inp.ts - window_ms]
            st.mem[key] = ts.tolist()
            st.since[last_key] = inp.ts
            if int(ts.size) >= param(dev, "door_cycles") and key not in st.open:
                ev = {"cycles": int(ts.size), "window_s": window_ms / 1000}
                return [raise_(key, "电梯门反复开关 Door cycling", int(ts[0]), ev)]
    last = st.since.get(last_key)
    if key in st.open and last is not None and inp.ts - last >= ms(dev, "door_cycle_window_s"):
        st.since.pop(last_key, None)
        st.mem[key] = []
        return [Clear(key, "60 s without a door cycle")]
    if key not in st.open and last is not None and inp.ts - last >= window_ms:
        st.since.pop(last_key, None)
    return []
