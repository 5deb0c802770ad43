"""Helpers shared by the rule families: parameters, timers, event-driven alerts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from anju.contract import Severity
from anju.registry import DeviceInfo
from backend.alerting.catalog import PARAM_DEFAULTS, SEVERITY
from backend.alerting.model import Clear, Decision, DeviceEvent, DeviceState, Input, Raise

Rule = Callable[[DeviceInfo, DeviceState, Input], list[Decision]]


def param(dev: DeviceInfo, name: str) -> float:
    """A numeric parameter: the device's registry ``params`` (with the deployment's and the
    catalog's defaults already merged in, as floats, by the engine: ``resolved_params``), else
    the catalog default."""
    v = dev.params.get(name)
    if type(v) is float:  # the engine's resolved params: the fast path
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    kind = PARAM_DEFAULTS.get(dev.kind, {})
    if name in kind:
        return float(kind[name])
    return float(PARAM_DEFAULTS["*"][name])


def resolved_params(
    kind: str, registry: Mapping[str, Any], deploy: Mapping[str, float]
) -> dict[str, Any]:
    """A device's parameters once and for all: the registry's over the deployment's over the
    catalog's defaults for its kind (and for every kind), numbers as floats, so that ``param``
    is one dictionary look-up per call."""
    merged: dict[str, Any] = {**PARAM_DEFAULTS["*"], **PARAM_DEFAULTS.get(kind, {})}
    merged.update(deploy)
    merged.update(registry)
    return {k: float(v) if is_num(v) else v for k, v in merged.items()}


def ms(dev: DeviceInfo, name: str) -> int:
    """A duration parameter given in seconds, in milliseconds."""
    return int(param(dev, name) * 1000)


def held(st: DeviceState, key: str, cond: bool, ts: int) -> int | None:
    """Track how long ``cond`` has held: the ms since it began, or None (timer reset)."""
    if not cond:
        st.since.pop(key, None)
        return None
    start = st.since.setdefault(key, ts)
    return ts - start


def is_num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def raise_(
    alert_type: str, title: str, ts: int, evidence: Mapping[str, Any], sev: Severity | None = None
) -> Raise:
    return Raise(alert_type, sev or SEVERITY[alert_type], title, ts, evidence)


def on_event(
    st: DeviceState, inp: Input, events: frozenset[str], alert_type: str, title: str
) -> list[Decision]:
    """Raise ``alert_type`` on any of ``events`` unless it is open already."""
    if isinstance(inp, DeviceEvent) and inp.type in events and alert_type not in st.open:
        return [raise_(alert_type, title, inp.ts, {"event": inp.type, **dict(inp.data)})]
    return []


def door_held_open(
    dev: DeviceInfo, st: DeviceState, inp: Input, alert_type: str, title: str
) -> list[Decision]:
    """The door (property ``door``) open for the device's ``held_open_limit_s`` raises
    ``alert_type`` from when it opened (evidence ``open_s``); it clears when the door closes.
    The fire door's rule and the access door's rule, with their own type, title and limit."""
    door = st.values.get("door")
    if alert_type in st.open:
        return [Clear(alert_type, "door closed")] if door == "closed" else []
    elapsed = held(st, alert_type, door == "open", inp.ts)
    if elapsed is not None and elapsed >= ms(dev, "held_open_limit_s"):
        ev = {"open_s": elapsed / 1000}
        return [raise_(alert_type, title, st.since[alert_type], ev)]
    return []


def quiet_clear(
    st: DeviceState, inp: Input, alert_type: str, quiet_ms: int, events: frozenset[str]
) -> list[Decision]:
    """Raise on ``events``, clear after ``quiet_ms`` without one (device time)."""
    key = f"{alert_type}/last"
    if isinstance(inp, DeviceEvent) and inp.type in events:
        st.since[key] = inp.ts
        return []
    last = st.since.get(key)
    if alert_type in st.open and last is not None and inp.ts - last >= quiet_ms:
        st.since.pop(key, None)
        return [Clear(alert_type, f"quiet for {quiet_ms // 1000} s")]
    return []
