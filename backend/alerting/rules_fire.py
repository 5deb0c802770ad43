"""Fire rules (ALERTS.md, "Fire"): detectors, fire panels (GB/T 26875.3), water pressure,
electrical fire, fire doors and the cameras' fire-lane and e-bike events."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any, Final

import numpy as np

from anju.registry import DeviceInfo
from backend.alerting.late import Pairs, component
from backend.alerting.model import (
    Clear,
    Decision,
    DeviceEvent,
    DeviceState,
    Input,
    Telemetry,
    Update,
)
from backend.alerting.rules_common import (
    door_held_open,
    held,
    is_num,
    ms,
    param,
    quiet_clear,
    raise_,
)

FIRE_ALARM: Final = "fire.alarm"
ELECTRICAL: Final = "fire.electrical"
PRESSURE: Final = "fire.water_pressure_low"
HEAT_RISE: Final = "fire.heat_rise"
PANEL_FAULT: Final = "fire.panel_fault"
PANEL_DISABLED: Final = "fire.panel_disabled"
SUPERVISORY: Final = "fire.supervisory"
LINKAGE: Final = "fire.linkage_no_feedback"
DOOR_HELD: Final = "fire.door_held_open"
LANE: Final = "fire.lane_blocked"
EBIKE_CHARGING: Final = "fire.ebike_charging"
FIRE_CONFIRM_WINDOW_MS: Final = 120_000

_FIRE_TRIGGERS: Final = {
    "smoke_detector": frozenset({"alarm"}),
    "heat_detector": frozenset({"alarm"}),
    "manual_call_point": frozenset({"alarm"}),
    "fire_panel": frozenset({"fire"}),
}
_SMOKE_ON: Final = "fire.alarm/smoke"
_PANEL_NORMAL: Final = frozenset({"normal", "reset"})
_MAX_COMPONENTS: Final = 256  # components remembered per panel alert

# Events that begin and end something, for judging late events (``backend.alerting.late``).
PANEL_PAIRS: Final = Pairs(
    opens={
        "fire": frozenset({"fire"}),
        "fault": frozenset({"fault"}),
        "power_fault": frozenset({"fault"}),
        "supervisory": frozenset({"supervisory"}),
        "disabled": frozenset({"disabled"}),
        "start": frozenset({"linkage"}),
    },
    closes={
        "reset": frozenset({"fire", "fault", "supervisory"}),
        "normal": frozenset({"fault", "supervisory"}),
        "enabled": frozenset({"disabled"}),
        "feedback": frozenset({"linkage"}),
    },
    per_component=frozenset({"fire", "fault", "supervisory", "disabled", "linkage"}),
    device_wide=frozenset({"reset"}),
)
CAMERA_PAIRS: Final = Pairs(
    opens={"fire_lane_blocked": frozenset({"lane"})},
    closes={"fire_lane_clear": frozenset({"lane"})},
)


def _component(dev: DeviceInfo, data: Any) -> str:
    return f"{dev.id}/{data.get('system_addr', '')}/{data.get('component_addr', '')}"


def _fire_source(dev: DeviceInfo, st: DeviceState, inp: Input) -> str | None:
    """The independent source of a fire trigger in this input, or None if it is not one."""
    kinds = _FIRE_TRIGGERS.get(dev.kind)
    if kinds is None:
        return None
    if isinstance(inp, DeviceEvent) and inp.type in kinds:
        return _component(dev, inp.data) if dev.kind == "fire_panel" else dev.id
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
    """Raised at once on the first trigger, never delayed for confirmation. A second
    independent trigger in the same building within 120 s marks the building's open fire
    alarms confirmed (GB 50116). A panel ``reset`` clears the panel's alarm; detectors' alarms
    are resolved by a person."""
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
    if isinstance(inp, DeviceEvent) and dev.kind == "fire_panel":
        evidence["component"] = dict(inp.data)
    if confirmed:
        evidence["confirmed_by"] = sorted({t[2] for t in others})
    out: list[Decision] = []
    if FIRE_ALARM in st.open:
        # Already alarmed: only a confirmation is news (no republish per repeated trigger).
        if confirmed:
            out.append(
                _update(FIRE_ALARM, {"confirmed": True, "confirmed_by": evidence["confirmed_by"]})
            )
    else:
        out.append(raise_(FIRE_ALARM, "火警 Fire alarm", inp.ts, evidence))
    if confirmed:
        for other in sorted({t[2] for t in others if t[2] != dev.id}):
            out.append(_update(FIRE_ALARM, {"confirmed": True, "confirmed_by": [dev.id]}, other))
    return out


def _update(atype: str, ev: dict[str, Any], device_id: str | None = None) -> Decision:
    return Update(atype, ev, device_id)


def fire_electrical(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Residual current >= ``residual_limit_ma`` or cable temperature >= ``temp_limit_c`` for
    10 s (or the device's own ``alarm``); clears below 90 % of both limits for 60 s."""
    v = st.values
    ma_lim, c_lim = param(dev, "residual_limit_ma"), param(dev, "temp_limit_c")
    ma, c = v.get("residual_current_ma"), v.get("cable_temp_c")
    ev = {"residual_current_ma": ma, "cable_temp_c": c, "residual_limit_ma": ma_lim}
    title = "电气火灾隐患 Electrical fire risk"
    if ELECTRICAL in st.open:
        r = param(dev, "clear_ratio")
        ok = (not is_num(ma) or ma < r * ma_lim) and (not is_num(c) or c < r * c_lim)
        elapsed = held(st, f"{ELECTRICAL}/ok", ok, inp.ts)
        if elapsed is not None and elapsed >= ms(dev, "clear_s"):
            st.since.pop(f"{ELECTRICAL}/ok", None)
            return [Clear(ELECTRICAL, "below 90 % of the limits for 60 s")]
        return []
    if isinstance(inp, DeviceEvent) and inp.type == "alarm":
        return [raise_(ELECTRICAL, title, inp.ts, {**ev, "event": "alarm"})]
    over = (is_num(ma) and ma >= ma_lim) or (is_num(c) and c >= c_lim)
    elapsed = held(st, ELECTRICAL, over, inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "over_s"):
        return [raise_(ELECTRICAL, title, st.since.pop(ELECTRICAL), ev)]
    return []


def fire_water_pressure_low(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``pressure_mpa`` < ``min_mpa`` for 60 s; clears at >= ``min_mpa`` + 0.02 for 60 s."""
    p = st.values.get("pressure_mpa")
    if not is_num(p):
        return []
    lo = param(dev, "min_mpa")
    if PRESSURE in st.open:
        elapsed = held(st, f"{PRESSURE}/ok", p >= lo + param(dev, "recover_mpa") - 1e-9, inp.ts)
        if elapsed is not None and elapsed >= ms(dev, "recover_s"):
            st.since.pop(f"{PRESSURE}/ok", None)
            return [Clear(PRESSURE, "pressure recovered for 60 s")]
        return []
    elapsed = held(st, PRESSURE, p < lo, inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "low_s"):
        ev = {"pressure_mpa": p, "min_mpa": lo, "system": dev.params.get("system")}
        return [raise_(PRESSURE, "消防水压不足 Water pressure low", st.since.pop(PRESSURE), ev)]
    return []


def rise_per_min(ts: list[int], temps: list[float]) -> float:
    """Least-squares slope of temperature over time, in degC per minute (numpy)."""
    return _slope(np.asarray(ts, dtype=np.float64), np.asarray(temps, dtype=np.float64))


def _slope(ts: np.ndarray[Any, Any], temps: np.ndarray[Any, Any]) -> float:
    n = ts.shape[0]
    t = (ts - ts[0]) / 60_000.0
    tc = t - t.sum() / n
    denom = float(np.dot(tc, tc))
    return 0.0 if denom == 0.0 else float(np.dot(tc, temps - temps.sum() / n) / denom)


def window_slope(w: Sequence[Sequence[float]]) -> float:
    """The least-squares slope (degC per minute) of a window of (ts, temperature): numpy for
    long windows (a detector reporting every second fills 60 points: 17 us, against 26 us in
    plain Python); below ``_NUMPY_FROM`` points the same sums in plain Python, since numpy's
    call overhead alone (about 10 us) is several times what they cost there (a detector
    reporting every 10 s has 6 points: 3 us)."""
    n = len(w)
    if n >= _NUMPY_FROM:
        a = np.fromiter(chain.from_iterable(w), np.float64, 2 * n).reshape(-1, 2).T.copy()
        return _slope(a[0], a[1])  # rows (contiguous): times, temperatures
    t0 = w[0][0]
    tm = sum(x[0] - t0 for x in w) / (n * 60_000.0)
    ym = sum(x[1] for x in w) / n
    sxx = sxy = 0.0
    for t, y in w:
        dx = (t - t0) / 60_000.0 - tm
        sxx += dx * dx
        sxy += dx * (y - ym)
    return 0.0 if sxx == 0.0 else sxy / sxx


_NUMPY_FROM = 30


def fire_heat_rise(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Temperature rising >= ``rise_c_per_min`` over a 60 s window (a least-squares slope of
    the readings in the window, which must span at least half of it); clears when the rise
    stays below half the limit for 60 s."""
    if not (isinstance(inp, Telemetry) and is_num(inp.metrics.get("temperature_c"))):
        return []
    win_ms = ms(dev, "rise_window_s")
    w: list[Sequence[float]] = st.mem.get(HEAT_RISE, [])
    oldest = inp.ts - win_ms
    if w and w[-1][0] <= inp.ts:
        # In time order (the engine evaluates a device's telemetry in order): drop the head.
        cut = 0
        while cut < len(w) and w[cut][0] <= oldest:
            cut += 1
        if cut:
            del w[:cut]
    else:
        w = [x for x in w if x[0] > oldest]
    w.append((inp.ts, float(inp.metrics["temperature_c"])))  # a tuple: not tracked by the GC
    st.mem[HEAT_RISE] = w
    if len(w) < 3 or w[-1][0] - w[0][0] < win_ms // 2:
        return []
    rise = window_slope(w)
    limit = param(dev, "rise_c_per_min")
    if HEAT_RISE in st.open:
        elapsed = held(st, f"{HEAT_RISE}/ok", rise < limit / 2, inp.ts)
        if elapsed is not None and elapsed >= ms(dev, "rise_clear_s"):
            st.since.pop(f"{HEAT_RISE}/ok", None)
            return [Clear(HEAT_RISE, "rise below half the limit for 60 s")]
        return []
    if rise >= limit:
        ev = {"rise_c_per_min": round(rise, 2), "temperature_c": w[-1][1], "limit": limit}
        return [raise_(HEAT_RISE, "温升异常 Rapid temperature rise", int(w[0][0]), ev)]
    return []


def _panel_toggle(
    st: DeviceState, inp: Input, atype: str, on: frozenset[str], off: frozenset[str], title: str
) -> list[Decision]:
    """Raised on the first of ``on`` from any component, cleared when every component that
    reported one is back (``off`` from it; a ``reset``, or an ``off`` without a component
    address, is about the whole panel). The GB/T 26875.3 adapter sends ``normal`` per
    component, when that component's last trouble bit falls."""
    if not isinstance(inp, DeviceEvent):
        return []
    key, full = f"{atype}/components", f"{atype}/more"
    comp = component(inp.data)
    comps: list[str] = st.mem.get(key, [])
    if inp.type in on:
        if comp not in comps:
            if len(comps) < _MAX_COMPONENTS:
                st.mem[key] = [*comps, comp]
            else:
                st.mem[full] = 1  # more than it remembers: only the whole panel clears it
        if atype not in st.open:
            return [raise_(atype, title, inp.ts, {"event": inp.type, **dict(inp.data)})]
        return []
    if inp.type in off:
        whole = inp.type == "reset" or comp == "/"
        rest = [] if whole else [c for c in comps if c != comp]
        if rest:
            st.mem[key] = rest
        else:
            st.mem.pop(key, None)
        if whole:
            st.mem.pop(full, None)
        if not rest and full not in st.mem and atype in st.open:
            return [Clear(atype, f"panel reported {inp.type}")]
    return []


def fire_panel_fault(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Panel ``fault`` or ``power_fault``; clears on ``normal`` or ``reset``."""
    on = frozenset({"fault", "power_fault"})
    return _panel_toggle(st, inp, PANEL_FAULT, on, _PANEL_NORMAL, "消防主机故障 Panel fault")


def fire_panel_disabled(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Components ``disabled`` (屏蔽); clears on ``enabled``."""
    on, off = frozenset({"disabled"}), frozenset({"enabled"})
    return _panel_toggle(st, inp, PANEL_DISABLED, on, off, "消防设备屏蔽 Components disabled")


def fire_supervisory(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``supervisory`` (signal valve closed, pressure switch); clears on ``normal``/``reset``."""
    on = frozenset({"supervisory"})
    return _panel_toggle(st, inp, SUPERVISORY, on, _PANEL_NORMAL, "消防监管报警 Supervisory")


def fire_linkage_no_feedback(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """A ``start`` without a ``feedback`` from the same component within 10 s; clears when
    every started component has reported its feedback."""
    prefix = f"{LINKAGE}/"
    if isinstance(inp, DeviceEvent) and inp.type in ("start", "feedback"):
        key = prefix + _component(dev, inp.data)
        if inp.type == "start":
            st.since.setdefault(key, inp.ts)
        else:
            st.since.pop(key, None)
    pending = {k: t for k, t in st.since.items() if k.startswith(prefix)}
    if LINKAGE in st.open:
        return [] if pending else [Clear(LINKAGE, "feedback arrived")]
    late = sorted(
        k[len(prefix) :] for k, t in pending.items() if inp.ts - t >= ms(dev, "linkage_feedback_s")
    )
    if late:
        first = min(pending.values())
        ev = {"components": late}
        return [raise_(LINKAGE, "联动无反馈 Linkage without feedback", first, ev)]
    return []


def fire_door_held_open(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """A normally-closed fire door open for ``held_open_limit_s`` (300 s); clears when closed."""
    return door_held_open(dev, st, inp, DOOR_HELD, "防火门未关闭 Fire door held open")


def fire_lane_blocked(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``fire_lane_blocked`` not followed by ``fire_lane_clear`` for 300 s; clears on
    ``fire_lane_clear``."""
    if isinstance(inp, DeviceEvent) and inp.type == "fire_lane_clear":
        st.since.pop(LANE, None)
        return [Clear(LANE, "fire lane clear")] if LANE in st.open else []
    if isinstance(inp, DeviceEvent) and inp.type == "fire_lane_blocked":
        st.since.setdefault(LANE, inp.ts)
    start = st.since.get(LANE)
    if LANE not in st.open and start is not None and inp.ts - start >= ms(dev, "lane_blocked_s"):
        ev = {"blocked_s": (inp.ts - start) / 1000}
        return [raise_(LANE, "消防通道堵塞 Fire lane blocked", start, ev)]
    return []


def fire_ebike_charging(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``ebike_charging`` in a corridor; clears after 30 min without a report, or a person."""
    ev_types = frozenset({"ebike_charging"})
    out: list[Decision] = []
    if isinstance(inp, DeviceEvent) and inp.type in ev_types and EBIKE_CHARGING not in st.open:
        ev = {"event": inp.type, **dict(inp.data)}
        out.append(raise_(EBIKE_CHARGING, "电动车违规充电 E-bike charging indoors", inp.ts, ev))
    quiet = ms(dev, "ebike_charging_quiet_s")
    return out + quiet_clear(st, inp, EBIKE_CHARGING, quiet, ev_types)
