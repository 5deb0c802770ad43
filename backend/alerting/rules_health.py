"""Device health (ALERTS.md, "Device health"): battery, clock skew, and liveness.

``device_battery_low`` and ``device_clock_skew`` are rules like the others. Liveness
(``device.offline``, ``fire.transmission_offline``, ``gateway.offline``) is about the absence of
input, so it is decided by ``liveness`` and ``gateway_liveness`` on the backend's clock (the
gateway's receive time of the last record), called by the engine's tick.
"""

from __future__ import annotations

from typing import Final

from anju.contract import FIRE_KINDS, Severity
from anju.registry import DeviceInfo
from backend.alerting.model import Clear, Decision, DeviceState, Input, Status, Telemetry
from backend.alerting.rules_common import is_num, ms, param, raise_

BATTERY: Final = "device.battery_low"
SKEW: Final = "device.clock_skew"
OFFLINE: Final = "device.offline"
TRANSMISSION: Final = "fire.transmission_offline"
GATEWAY_OFFLINE: Final = "gateway.offline"


def device_battery_low(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """``battery_pct`` (telemetry or status) below 20; clears above 30."""
    if isinstance(inp, Telemetry):
        pct = inp.metrics.get("battery_pct")
    elif isinstance(inp, Status):
        pct = inp.status.get("battery_pct")
    else:
        return []
    if not is_num(pct):
        return []
    if BATTERY not in st.open and pct < param(dev, "battery_low_pct"):
        return [raise_(BATTERY, "电池电量低 Battery low", inp.ts, {"battery_pct": pct})]
    if BATTERY in st.open and pct > param(dev, "battery_ok_pct"):
        return [Clear(BATTERY, f"battery at {pct} %")]
    return []


def device_clock_skew(dev: DeviceInfo, st: DeviceState, inp: Input) -> list[Decision]:
    """Device time more than 5 min away from the gateway's; clears within 1 min. The engine
    keeps ``offset_ms`` (gateway receive time minus device time) of the last record, and,
    when that record was evaluated on its receive time for being too far off,
    ``mem["skew_ms"]`` (its real offset)."""
    if not isinstance(inp, Telemetry) or st.mem.get("gw_timed"):
        return []
    offset = st.mem.get("skew_ms", st.offset_ms)
    skew = abs(offset)
    if SKEW not in st.open and skew > ms(dev, "clock_skew_s"):
        ev = {"skew_s": round(offset / 1000, 3)}
        return [raise_(SKEW, "设备时钟偏差 Device clock skew", inp.ts, ev)]
    if SKEW in st.open and skew <= ms(dev, "clock_ok_s"):
        return [Clear(SKEW, "device clock within 1 min")]
    return []


def liveness(dev: DeviceInfo, st: DeviceState, now_ms: int) -> Decision | None:
    """``device.offline`` (``fire.transmission_offline`` for fire panels) when nothing was
    heard for 3 reporting intervals (``report_interval_s``, or ``heartbeat_s`` for panels);
    clears when the device is heard again. Only devices heard at least once are watched."""
    if st.last_rx == 0:
        return None
    atype = TRANSMISSION if dev.kind == "fire_panel" else OFFLINE
    interval = "heartbeat_s" if dev.kind == "fire_panel" else "report_interval_s"
    limit = int(param(dev, interval) * param(dev, "offline_intervals") * 1000)
    silent = now_ms - st.last_rx
    if atype not in st.open and silent >= limit:
        important = dev.kind == "elevator" or dev.kind in FIRE_KINDS
        sev = Severity.MAJOR if important else Severity.MINOR
        title = (
            "火灾报警传输装置离线 Fire transmission device offline"
            if atype == TRANSMISSION
            else "设备离线 Device offline"
        )
        ev = {"silent_s": round(silent / 1000, 1), "limit_s": limit / 1000}
        return raise_(atype, title, st.last_rx, ev, sev)
    if atype in st.open and silent < limit:
        return Clear(atype, "heard again")
    return None
